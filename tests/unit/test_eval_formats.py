"""Readers for COCO captions, Karpathy splits, NoCaps and BLIP's lists; COCO results in and out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blipcap.errors import EvaluationError
from blipcap.evaluation.formats import (
    ImageRef,
    locate_images,
    match_predictions,
    read_annotations,
    read_predictions,
    write_results,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"


def test_coco_captions():
    ann = read_annotations(FIXTURES / "coco_captions.json")
    assert ann.format == "coco"
    # Image 5 has no reference caption: it cannot be scored, so it is dropped.
    assert [im.image_id for im in ann.images] == [42, 7, 1001]
    assert ann.images[0] == ImageRef(42, "COCO_val2014_000000000042.jpg", None)
    assert ann.references == {
        42: ["A red apple sits on a wooden table.", "An apple on a table"],
        7: [
            "A blue car drives down the street",
            "a car on a city street",
            "The blue car is driving.",
        ],
        1001: ["Two people ride bikes along a river"],
    }
    assert ann.domains == []


def test_karpathy_split_selection():
    ann = read_annotations(FIXTURES / "karpathy_dataset_coco.json", split="test")
    assert ann.format == "karpathy"
    assert ann.split == "test"
    assert [im.image_id for im in ann.images] == [42, 7]  # COCO ids, as results files use
    assert ann.images[0].file_name == "val2014/COCO_val2014_000000000042.jpg"
    assert ann.references[7] == ["A blue car drives down the street", "a car on a city street"]

    assert [
        im.image_id
        for im in read_annotations(FIXTURES / "karpathy_dataset_coco.json", "val").images
    ] == [3]
    everything = read_annotations(FIXTURES / "karpathy_dataset_coco.json", split="all")
    assert [im.image_id for im in everything.images] == [42, 9, 7, 3]
    assert everything.split is None


def test_karpathy_unknown_split_names_the_splits():
    with pytest.raises(EvaluationError, match=r"no image in split 'tset'.*restval, test, val"):
        read_annotations(FIXTURES / "karpathy_dataset_coco.json", split="tset")


def test_nocaps_domains():
    ann = read_annotations(FIXTURES / "nocaps_val.json")
    assert ann.format == "nocaps"
    assert ann.domains == ["in-domain", "near-domain", "out-domain"]
    assert [(im.image_id, im.domain) for im in ann.images] == [
        (0, "in-domain"),
        (1, "near-domain"),
        (2, "out-domain"),
        (3, "out-domain"),
    ]
    assert ann.references[2] == [
        "A jellyfish floating in dark blue water.",
        "an orange jellyfish in the ocean",
    ]


def test_split_without_captions_says_to_upload():
    with pytest.raises(EvaluationError, match="--predictions-out"):
        read_annotations(FIXTURES / "nocaps_test_image_info.json")


def test_blip_list_takes_the_id_from_the_file_name():
    ann = read_annotations(FIXTURES / "blip_coco_karpathy_test.json")
    assert ann.format == "blip"
    assert [(im.image_id, im.file_name) for im in ann.images] == [
        (42, "val2014/COCO_val2014_000000000042.jpg"),
        (7, "val2014/COCO_val2014_000000000007.jpg"),
    ]
    assert ann.references[42] == ["A red apple sits on a wooden table.", "An apple on a table"]


def test_limit_keeps_the_first_images():
    ann = read_annotations(FIXTURES / "nocaps_val.json").limit(2)
    assert [im.image_id for im in ann.images] == [0, 1]
    assert set(ann.references) == {0, 1}
    assert ann.domains == ["in-domain", "near-domain"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"not valid JSON \(line 1"),
        ('{"foo": 1}', "not a format blipcap reads.*found keys: foo"),
        ('{"images": [{"id": 1}], "annotations": [{"image_id": 2, "caption": "x"}]}', "image id 2"),
        ('{"images": [{"id": 1}, {"id": 1}], "annotations": []}', "appears twice"),
        ('[{"image": "a.jpg"}]', "entry 0 needs 'image' and 'caption'"),
    ],
)
def test_bad_annotation_files(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(EvaluationError, match=message):
        read_annotations(path)


def test_missing_annotation_file(tmp_path):
    with pytest.raises(EvaluationError, match="does not exist"):
        read_annotations(tmp_path / "nope.json")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_locate_images_by_relative_path_base_name_and_coco_id(tmp_path):
    # Karpathy names val2014/<file>; the files may also sit flat in the folder.
    a = _touch(tmp_path / "val2014" / "COCO_val2014_000000000042.jpg")
    b = _touch(tmp_path / "COCO_val2014_000000000007.jpg")
    ann = read_annotations(FIXTURES / "karpathy_dataset_coco.json")
    found, missing = locate_images(ann, tmp_path)
    assert found == {42: a, 7: b}
    assert missing == []

    # A COCO file that names no files (like BLIP's *_gt.json): found by the 12-digit id.
    gt = tmp_path / "gt.json"
    gt.write_text(
        json.dumps(
            {
                "images": [{"id": 42}, {"id": 99}],
                "annotations": [
                    {"image_id": 42, "caption": "x", "id": 1},
                    {"image_id": 99, "caption": "y", "id": 2},
                ],
            }
        )
    )
    found, missing = locate_images(read_annotations(gt), tmp_path)
    assert found == {42: a}
    assert [im.image_id for im in missing] == [99]


def test_locate_images_needs_a_folder(tmp_path):
    ann = read_annotations(FIXTURES / "coco_captions.json")
    with pytest.raises(EvaluationError, match="is not a folder"):
        locate_images(ann, tmp_path / "missing")


def test_coco_results_round_trip(tmp_path):
    out = tmp_path / "preds.json"
    write_results(out, [(42, "a red apple"), (7, "a blue car")])
    assert json.loads(out.read_text()) == [
        {"image_id": 42, "caption": "a red apple"},
        {"image_id": 7, "caption": "a blue car"},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["preds.json"]  # no temp file left
    preds = read_predictions(out)
    assert preds.format == "coco-results"
    assert preds.by_id == {42: "a red apple", 7: "a blue car"}


def test_match_coco_results_by_id():
    ann = read_annotations(FIXTURES / "coco_captions.json")
    captions, missing = match_predictions(ann, read_predictions(FIXTURES / "coco_results.json"))
    assert captions == {42: "a red apple on a table", 7: "a blue car driving down a street"}
    assert [im.image_id for im in missing] == [1001]


def test_match_jsonl_by_path_or_file_name(tmp_path):
    records = [
        {"path": str(tmp_path / "imgs" / "COCO_val2014_000000000042.jpg"), "caption": "apple"},
        {"path": "elsewhere/COCO_val2014_000000000007.jpg", "caption": "car"},
        {
            "path": "COCO_val2014_000000001001.jpg",
            "caption": None,
            "error": {"type": "X", "message": "m"},
        },
    ]
    path = tmp_path / "run.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    ann = read_annotations(FIXTURES / "coco_captions.json")
    captions, missing = match_predictions(ann, read_predictions(path), tmp_path / "imgs")
    assert captions == {42: "apple", 7: "car"}
    assert [im.image_id for im in missing] == [1001]  # its record is an error: nothing to score


def test_duplicate_prediction_is_refused(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[{"image_id": 1, "caption": "a"}, {"image_id": 1, "caption": "b"}]')
    with pytest.raises(EvaluationError, match="image id 1 has two captions"):
        read_predictions(path)


def test_jsonl_errors_name_the_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"path": "a.jpg", "caption": "x"}\n{"caption": "y"}\n')
    with pytest.raises(EvaluationError, match="line 2 has no 'path'"):
        read_predictions(path)
