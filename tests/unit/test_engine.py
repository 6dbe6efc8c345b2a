"""The caption engine's one loop, its merge helper, and the layering it relies on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from blipcap import engine
from blipcap.batching import BatchSizer
from blipcap.engine import Finisher, Prepared, split_good
from blipcap.errors import OutOfMemoryError
from blipcap.options import CaptionOptions
from blipcap.results import Caption, ItemError, Provenance

SRC = Path(__file__).resolve().parents[2] / "src" / "blipcap"
PROVENANCE = Provenance(
    model="m",
    revision="r",
    backend="fake",
    dtype="float32",
    device="cpu",
    options={},
    blipcap_version="0",
)


def test_split_good_runs_the_good_and_merges_in_input_order():
    split = split_good([1, -2, 3, -4, 5], lambda x: x > 0)
    assert split.good == [1, 3, 5]
    merged = split.merge([10, 30, 50], bad=lambda x: f"bad {x}")
    assert merged == [10, "bad -2", 30, "bad -4", 50]
    assert split.merge([1, 3, 5], bad=str, good=lambda x, r: (x, r)) == [
        (1, 1), "-2", (3, 3), "-4", (5, 5),
    ]  # fmt: skip


def test_split_good_refuses_results_that_do_not_match_the_good_items():
    split = split_good(["a", "", "b"], bool)
    with pytest.raises(RuntimeError, match="more results than the 2 good items"):
        split.merge([1, 2, 3], bad=lambda x: None)
    with pytest.raises(StopIteration):
        split.merge([1], bad=lambda x: None)


class FakeStages:
    """Sources are ints; negative ones fail to prepare; 'tokens' echo the source."""

    name = "test-prepare"
    workers = 2

    def __init__(self, overlap: bool, oom_above: int | None = None):
        self.overlap = overlap
        self.oom_above = oom_above
        self.calls: list[tuple[str, list[int]]] = []

    def prepare(self, source: int) -> Prepared:
        if source < 0:
            return Prepared(f"#{source}", error=ItemError("InputError", f"{source} is broken"))
        return Prepared(f"#{source}", pixels=source)

    def encode(self, items):
        values = [p.pixels for p in items]
        self.calls.append(("encode", values))
        return values

    def decode(self, encoded, options):
        self.calls.append(("decode", encoded))
        if self.oom_above is not None and len(encoded) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [[[v, v]] for v in encoded]


def run(stages, sources, size):
    def result(label, decoded, opts, provenance):
        captions = ["-".join(map(str, tokens)) for tokens in decoded]
        return Caption(label, captions[0], captions=captions, provenance=provenance)

    finisher = Finisher(result)
    sizer = BatchSizer(size)
    records = list(
        engine.run(
            stages, sources, CaptionOptions(), sizer=sizer, finisher=finisher, provenance=PROVENANCE
        )
    )
    return records, sizer


@pytest.mark.parametrize("overlap", [False, True])
def test_one_record_per_source_in_input_order(overlap):
    stages = FakeStages(overlap)
    records, _ = run(stages, [1, -2, 3, 4, -5, 6, 7], size=3)
    assert [r.path for r in records] == ["#1", "#-2", "#3", "#4", "#-5", "#6", "#7"]
    assert [r.caption for r in records] == ["1-1", None, "3-3", "4-4", None, "6-6", "7-7"]
    assert records[1].error.message == "-2 is broken" and records[1].provenance is PROVENANCE


def test_overlap_encodes_the_next_batch_before_decoding_this_one():
    plain, overlapped = FakeStages(False), FakeStages(True)
    run(plain, [1, 2, 3, 4], size=2)
    run(overlapped, [1, 2, 3, 4], size=2)
    assert [c[0] for c in plain.calls] == ["encode", "decode", "encode", "decode"]
    assert [c[0] for c in overlapped.calls] == ["encode", "encode", "decode", "decode"]


def test_a_batch_of_only_bad_inputs_never_reaches_the_model():
    stages = FakeStages(False)
    records, _ = run(stages, [-1, -2], size=2)
    assert stages.calls == [] and all(r.error is not None for r in records)


def test_out_of_memory_halves_the_batch_and_later_batches_keep_the_size():
    stages = FakeStages(True, oom_above=2)
    records, sizer = run(stages, list(range(1, 8)), size=4)
    assert [r.caption for r in records] == [f"{i}-{i}" for i in range(1, 8)]
    decoded = [len(v) for kind, v in stages.calls if kind == "decode"]
    assert decoded == [4, 2, 2, 3, 2, 1] and sizer.size == 2


def test_an_input_that_does_not_fit_alone_is_an_item_error():
    stages = FakeStages(False, oom_above=0)
    records, _ = run(stages, [1, -2, 3], size=4)
    assert [r.error.type for r in records] == [
        OutOfMemoryError.__name__, "InputError", OutOfMemoryError.__name__,
    ]  # fmt: skip
    assert "out of memory even for this image alone" in records[0].error.message


def test_other_errors_are_not_swallowed():
    class Broken(FakeStages):
        def decode(self, encoded, options):
            raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        run(Broken(False), [1, 2], size=2)


# -- layering ----------------------------------------------------------------------------


def imports_of(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from X import name`` in ``path``, relative modules resolved."""
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out += [(module, a.name) for a in node.names]
    return out


ABOVE_BACKENDS = ("captioner", "batching", "engine", "export", "server", "cli", "distributed")


@pytest.mark.parametrize("path", sorted((SRC / "backends").glob("*.py")), ids=lambda p: p.name)
def test_backends_import_nothing_above_them(path):
    for module, name in imports_of(path):
        parts = module.split(".")
        above = parts[1] if parts[0] == "blipcap" and len(parts) > 1 else None
        if module == "blipcap":
            above = name
        assert above not in ABOVE_BACKENDS, f"{path.name} imports {module}.{name}"


ENGINE_MODULES = [
    "captioner.py", "engine.py", "batching.py", "distributed.py", "images.py", "inputs.py",
    "image_guard.py", "memory.py", "model/processing.py", "evaluation/bench.py",
    "server/app.py", "server/captioning.py", "server/batcher.py", "server/inputs.py",
    *[f"backends/{p.name}" for p in (SRC / "backends").glob("*.py")],
]  # fmt: skip


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_no_private_names_are_imported_from_other_modules(name):
    names = imports_of(SRC / name)
    private = [f"{m}.{n}" for m, n in names if n.startswith("_") and not n.startswith("__")]
    assert private == []


def test_batching_does_not_import_the_exporter():
    assert not [m for m, _ in imports_of(SRC / "batching.py") if m.startswith("blipcap.export")]


def test_captioners_take_the_caption_model_contract():
    """Captioner and the tests' fake take what index, documents, social and evaluation call."""
    import inspect

    from blipcap.captioner import Captioner
    from blipcap.results import CaptionModel
    from tests.fakes import FakeCaptioner

    want = list(inspect.signature(CaptionModel.caption_iter).parameters)
    for cls in (Captioner, FakeCaptioner):
        assert list(inspect.signature(cls.caption_iter).parameters)[: len(want)] == want
    assert list(inspect.signature(Captioner.caption).parameters)[: len(want)] == want
