"""``blipcap eval`` end to end on a tiny random checkpoint (the COCO metrics need Java).

The captions of a random-weight model mean nothing; these tests check the
plumbing exactly: which images are captioned with which options, what is
written, and that the scores are pycocoevalcap's for those captions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from blipcap import Captioner
from blipcap.cli import main
from blipcap.options import resolve_options

FIXTURES = Path(__file__).parent.parent / "fixtures" / "eval"
NEEDS_JAVA = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="Java is not installed (apt-get install default-jre-headless)",
)


def _images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        path = folder / name
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path, "JPEG")
        paths.append(path)
    return paths


def _eval(*args: str):
    return CliRunner().invoke(main, ["eval", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def cap(tiny_checkpoint):
    return Captioner(str(tiny_checkpoint), backend="torch", device="cpu")


def _pycocoevalcap_without_meteor(refs: dict, cands: dict) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": cands[k]}] for k in refs})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": bleu[n] for n in range(4)}
    out["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


@NEEDS_JAVA
@pytest.mark.slow
def test_nocaps_eval_with_the_coco_preset(tiny_checkpoint, cap, tmp_path):
    from blipcap.evaluation.formats import read_annotations

    ann = read_annotations(FIXTURES / "nocaps_val.json")
    paths = _images(tmp_path / "val", [im.file_name for im in ann.images])
    paths[3].unlink()  # image 3 is missing: reported, left out of the scores, exit 1
    out = tmp_path / "preds.json"
    result = _eval(
        "--annotations", str(FIXTURES / "nocaps_val.json"),
        "--images", str(tmp_path / "val"),
        "--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu",
        "--predictions-out", str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)

    # The same captions as the Captioner gives with the paper's protocol.
    expected = [r.caption for r in cap.caption([str(p) for p in paths[:3]], preset="coco")]
    assert json.loads(out.read_text()) == [
        {"image_id": i, "caption": c} for i, c in zip([0, 1, 2], expected, strict=True)
    ]
    assert doc["images"] == {"references": 4, "scored": 3, "failed": 1}
    assert doc["failures"][0]["image_id"] == 3
    assert doc["failures"][0]["error"]["type"] == "FileNotFoundError"

    # Scores are pycocoevalcap's for these captions (METEOR checked in test_eval_metrics).
    refs = {i: ann.references[i] for i in (0, 1, 2)}
    reference = _pycocoevalcap_without_meteor(refs, dict(zip([0, 1, 2], expected, strict=True)))
    for name, value in reference.items():
        assert doc["metrics"][name] == value, name
    assert 0.0 <= doc["metrics"]["METEOR"] <= 1.0
    assert sorted(doc["metrics_by_domain"]) == ["in-domain", "near-domain", "out-domain"]
    in_domain = _pycocoevalcap_without_meteor({0: refs[0]}, {0: expected[0]})
    assert doc["metrics_by_domain"]["in-domain"]["BLEU-1"] == in_domain["BLEU-1"]
    if "SPICE" not in doc["metrics"]:
        assert doc["skipped_metrics"]["SPICE"].startswith("SPICE skipped")

    p = doc["provenance"]
    assert (p["model"], p["backend"], p["device"], p["dtype"]) == (
        str(tiny_checkpoint),
        "torch",
        "cpu",
        "float32",
    )
    assert p["preset"] == "coco" and p["random_weights"] is True
    assert p["options"] == resolve_options(preset="coco").to_dict()
    assert p["libraries"]["pycocoevalcap"] and p["hardware"]["cpu_count"] >= 1 and p["java"]
    assert set(doc["timings"]) >= {
        "load_s",
        "caption_s",
        "images_per_s",
        "metrics_s",
        "metrics",
        "total_s",
    }
    assert doc["annotations"] == {
        "file": str(FIXTURES / "nocaps_val.json"),
        "format": "nocaps",
        "split": None,
    }
    assert "RANDOM weights" in result.stderr

    # Scoring the written predictions file gives the very same scores, without a model.
    again = _eval(
        "--annotations", str(FIXTURES / "nocaps_val.json"), "--predictions", str(out), "--json"
    )
    assert again.exit_code == 1  # image 3 still has no caption
    redo = json.loads(again.stdout)
    assert redo["metrics"] == doc["metrics"]
    assert redo["metrics_by_domain"] == doc["metrics_by_domain"]
    assert redo["failures"] == [
        {
            "image_id": 3,
            "path": "00a84fc7ab3c1f7f.jpg",
            "error": {"type": "NoPrediction", "message": f"no caption in {out}"},
        }
    ]
    assert redo["provenance"]["source"] == "predictions"


def _caption_cli(tiny_checkpoint, out: Path, *inputs: str, extra: tuple[str, ...] = ()) -> None:
    result = CliRunner().invoke(
        main,
        ["caption", *inputs, "--model", str(tiny_checkpoint), "--backend", "torch", "--device", "cpu",
         "--format", "jsonl", "--output", str(out), *extra],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_golden_run_passes_then_catches_one_changed_caption(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLIPCAP_MODEL", raising=False)
    _images(tmp_path / "golden", ["a.jpg", "b.jpg", "c.jpg"])
    golden = tmp_path / "golden.jsonl"
    _caption_cli(tiny_checkpoint, golden, "golden", extra=("--preset", "coco"))

    # No --model: the golden file says which model (and backend, dtype, options) made it.
    ok = _eval("--golden", "golden.jsonl", "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == "golden golden.jsonl: 3 of 3 identical"

    records = [json.loads(line) for line in golden.read_text().splitlines()]
    old = records[1]["caption"]
    records[1]["caption"] = old + " extra"
    golden.write_text("".join(json.dumps(r) + "\n" for r in records))
    drift = _eval("--golden", "golden.jsonl", "--device", "cpu")
    assert drift.exit_code == 1
    assert drift.stdout.splitlines() == [
        "golden golden.jsonl: 2 of 3 identical, 1 drifted, 0 missing",
        f"DRIFT {records[1]['path']}",
        f"  golden: {old + ' extra'!r}",
        f"  now:    {old!r}",
    ]


@NEEDS_JAVA
@pytest.mark.slow
def test_agreement_of_a_run_with_itself(tiny_checkpoint, tmp_path):
    _images(tmp_path / "imgs", ["x.jpg", "y.jpg", "z.jpg"])
    reference = tmp_path / "fp32.jsonl"
    _caption_cli(tiny_checkpoint, reference, str(tmp_path / "imgs"), extra=("--beams", "2"))
    result = _eval(
        "--references-from", str(reference), "--backend", "torch", "--device", "cpu", "--json"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["agreement"]["compared"] == doc["agreement"]["identical"] == 3
    assert doc["agreement"]["identical_rate"] == 1.0
    assert doc["agreement"]["differences"] == []
    # The candidate run reused the reference run's options and model.
    stored = json.loads(reference.read_text().splitlines()[0])
    assert doc["provenance"]["options"] == stored["options"]
    assert doc["provenance"]["model"] == str(tiny_checkpoint)
    assert doc["reference"]["file"] == str(reference)
    assert doc["metrics"]["ROUGE-L"] == pytest.approx(1.0)
    assert doc["metrics"]["BLEU-1"] == pytest.approx(1.0, abs=1e-6)


# --- golden checks of ONNX exports -----------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tiny_checkpoint, tmp_path_factory):
    """A float32 and an int8 ONNX export of the tiny checkpoint."""
    from blipcap.export import export_onnx

    root = tmp_path_factory.mktemp("exports")
    export_onnx(str(tiny_checkpoint), root / "fp32", verify_images=2, quiet=True)
    export_onnx(str(tiny_checkpoint), root / "int8", quantize="int8", verify_images=2, quiet=True)
    return {"float32": root / "fp32", "int8": root / "int8"}


def _record(model: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(
        main,
        ["caption", "golden", "--model", str(model), "--device", "cpu", "--format", "jsonl",
         "--output", str(out), *extra],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


@pytest.fixture
def golden_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BLIPCAP_MODEL", raising=False)
    _images(tmp_path / "golden", ["a.jpg", "b.jpg", "c.jpg"])
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_golden_recorded_from_an_export_passes_with_it(exports, golden_images, dtype):
    _record(exports[dtype], golden_images / "golden.jsonl")
    record = json.loads((golden_images / "golden.jsonl").read_text().splitlines()[0])
    assert (record["backend"], record["dtype"]) == ("onnx", dtype)

    ok = _eval("--golden", "golden.jsonl", "--device", "cpu")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip() == "golden golden.jsonl: 3 of 3 identical"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_golden_from_torch_checked_against_an_export(
    tiny_checkpoint, exports, golden_images, dtype
):
    _record(tiny_checkpoint, golden_images / "golden.jsonl", "--backend", "torch")

    # --model overrides the recorded model; the export brings its own backend and dtype.
    run = _eval("--golden", "golden.jsonl", "--model", str(exports[dtype]), "--device", "cpu")
    lines = run.stdout.splitlines()
    assert "note: backend was 'torch', now 'onnx'" in lines
    if dtype == "float32":  # the same weights, the same arithmetic: the same captions
        assert run.exit_code == 0, run.output
        assert lines[0] == "golden golden.jsonl: 3 of 3 identical"
    else:  # int8 weights may change a token: drift (1) is an answer, not an error
        assert run.exit_code in (0, 1), run.output
        assert "note: dtype was 'float32', now 'int8'" in lines


@pytest.mark.slow
def test_golden_flags_override_the_recorded_ones(tiny_checkpoint, exports, golden_images):
    _record(exports["float32"], golden_images / "golden.jsonl")
    # The recorded model with --backend torch: the torch backend cannot run an export.
    wrong = _eval("--golden", "golden.jsonl", "--backend", "torch", "--device", "cpu")
    assert wrong.exit_code == 3
    assert "use --backend onnx" in wrong.output
    # --model and --backend (and --dtype) given: the checkpoint on torch, not the export.
    ok = _eval(
        "--golden", "golden.jsonl", "--model", str(tiny_checkpoint), "--backend", "torch",
        "--dtype", "float32", "--device", "cpu",
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "note: backend was 'onnx', now 'torch'" in ok.stdout.splitlines()


@pytest.mark.slow
def test_export_that_no_longer_matches_the_golden_file_says_what_to_pass(
    exports, golden_images, monkeypatch
):
    model = golden_images / "export"
    shutil.copytree(exports["float32"], model)
    _record(model, golden_images / "golden.jsonl")
    shutil.rmtree(model)
    shutil.copytree(exports["int8"], model)  # re-exported, quantized, in the same place
    monkeypatch.setattr("blipcap.captioner._SHARED", {})  # as in CI: a new process

    bad = _eval("--golden", "golden.jsonl", "--device", "cpu")
    assert bad.exit_code == 2
    assert (
        "golden.jsonl was recorded with dtype float32, but this model now runs with dtype int8. "
        "To check it against the golden captions anyway, pass --dtype auto"
    ) in bad.output

    # Told to, it checks the int8 export against the float32 captions (exactly).
    anyway = _eval("--golden", "golden.jsonl", "--dtype", "auto", "--device", "cpu")
    assert anyway.exit_code in (0, 1), anyway.output
    assert "note: dtype was 'float32', now 'int8'" in anyway.stdout.splitlines()
