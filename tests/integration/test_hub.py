"""Model resolution: local directories, a Hugging Face cache laid out on disk, offline errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from blipcap import hub
from blipcap.errors import ModelLoadError, ModelNotFoundError, OptionsError
from blipcap.hub import DEFAULT_MODEL, load_json, resolve_model
from tests.conftest import checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
}
FETCH_LARGE = (
    'hf download Salesforce/blip-image-captioning-large --include "*.json" '
    '--include "*.safetensors" --include "*.txt"'
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # Digest sidecars and the hub cache live in tmp; the hub itself is never reached.
    monkeypatch.setenv("BLIPCAP_CACHE_DIR", str(tmp_path / "blipcap-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BLIPCAP_MODEL", raising=False)
    # Messages name `hf` when PATH finds it (see test_download_command_runs_without_hf_on_path).
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")


@pytest.fixture
def model_dir(tiny_checkpoint, tmp_path) -> Path:
    """A private copy of the tiny checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fake_hub_cache(cache: Path, repo_id: str, src: Path, commit: str = COMMIT) -> Path:
    """Lay ``src`` out the way huggingface_hub stores a downloaded snapshot; return the snapshot dir.

    blobs/ holds the contents, named by sha256 for LFS files (weights) and by
    git blob sha1 for the rest; snapshots/<commit>/ holds relative symlinks to
    them; refs/main holds the commit hash (no newline).
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        lfs = f.suffix in (".safetensors", ".bin")
        blob = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        (repo / "blobs" / blob).write_bytes(data)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def expected_revision(files: dict[str, str]) -> str:
    lines = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return "local-" + hashlib.sha256(lines.encode()).hexdigest()[:12]


# --- local directories -----------------------------------------------------------------------------


def test_local_directory_resolves(tiny_checkpoint):
    mf = resolve_model(str(tiny_checkpoint))
    assert mf.model_id == str(tiny_checkpoint)
    assert mf.path == tiny_checkpoint.resolve()
    assert (mf.kind, mf.source) == ("hf", "local")
    assert mf.weights == tiny_checkpoint.resolve() / "model.safetensors"
    assert mf.weight_files == [mf.weights]
    assert mf.config["model_type"] == "blip"
    assert mf.config["vision_config"]["hidden_size"] == 48
    assert mf.random_weights is True
    assert set(mf.files) == TINY_FILES
    for name, digest in mf.files.items():
        assert digest == sha256(tiny_checkpoint / name), name
    assert mf.revision == expected_revision(mf.files)
    assert hash(mf) == hash(resolve_model(str(tiny_checkpoint))) and mf == resolve_model(
        str(tiny_checkpoint)
    )


def test_revision_is_stable_and_follows_the_contents(model_dir, tmp_path):
    first = resolve_model(model_dir)
    assert first.revision.startswith("local-") and len(first.revision) == 18
    assert resolve_model(model_dir).revision == first.revision
    # The same files elsewhere are the same model.
    moved = Path(shutil.copytree(model_dir, tmp_path / "elsewhere"))
    assert resolve_model(moved).revision == first.revision

    # Flip one byte of the weights, same size; set a later mtime as a writer would.
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    st = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    changed = resolve_model(model_dir)
    assert changed.files["model.safetensors"] == sha256(weights)
    assert changed.files["model.safetensors"] != first.files["model.safetensors"]
    assert changed.revision != first.revision


def test_digests_are_cached_in_a_sidecar(model_dir, monkeypatch, tmp_path):
    hashed: list[str] = []
    real_hash = hub._hash_file

    def counting(path, size, name):
        hashed.append(name)
        return real_hash(path, size, name)

    monkeypatch.setattr(hub, "_hash_file", counting)
    first = resolve_model(model_dir)
    assert sorted(hashed) == sorted(TINY_FILES)
    assert len(list((tmp_path / "blipcap-cache" / "sha256").glob("*.json"))) == len(TINY_FILES)

    hashed.clear()
    assert resolve_model(model_dir).files == first.files
    assert hashed == []

    # A touched file (new mtime) is hashed again; the rest still come from the sidecar.
    st = (model_dir / "config.json").stat()
    os.utime(model_dir / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert resolve_model(model_dir).files == first.files
    assert hashed == ["config.json"]


@pytest.mark.parametrize(
    "remove, named",
    [
        (["config.json"], "config.json"),
        (["model.safetensors"], "model.safetensors (or pytorch_model.bin)"),
        (["tokenizer.json", "vocab.txt"], "tokenizer.json (or vocab.txt)"),
        (["preprocessor_config.json"], "preprocessor_config.json (or processor_config.json)"),
    ],
)
def test_missing_file_is_named_with_the_directory(model_dir, remove, named):
    for name in remove:
        (model_dir / name).unlink()
    with pytest.raises(ModelLoadError) as exc:
        resolve_model(model_dir)
    msg = str(exc.value)
    assert msg.startswith(f"Missing from {model_dir.resolve()}: {named}. ")
    assert "hf download Salesforce/blip-image-captioning-large" in msg


def test_every_missing_file_is_named(model_dir):
    for name in ("config.json", "model.safetensors"):
        (model_dir / name).unlink()
    with pytest.raises(
        ModelLoadError, match=r": config.json, model.safetensors \(or pytorch_model.bin\)\. "
    ):
        resolve_model(model_dir)


def test_vocab_only_and_nested_processor_config_are_accepted(model_dir):
    # transformers 5 writes processor_config.json; older tokenizers ship only vocab.txt.
    (model_dir / "tokenizer.json").unlink()
    (model_dir / "preprocessor_config.json").rename(model_dir / "processor_config.json")
    mf = resolve_model(model_dir)
    assert "processor_config.json" in mf.files and "tokenizer.json" not in mf.files
    assert mf.files["vocab.txt"] == sha256(model_dir / "vocab.txt")


def test_pytorch_bin_only_directory():
    bin_dir = checkpoint("tiny", safetensors=False)
    mf = resolve_model(bin_dir)
    assert mf.weights == bin_dir.resolve() / "pytorch_model.bin"
    assert "pytorch_model.bin" in mf.files and "model.safetensors" not in mf.files
    assert mf.revision != resolve_model(checkpoint("tiny")).revision


def test_sharded_safetensors(model_dir):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(model_dir / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, model_dir / shard)
    index = {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    (model_dir / "model.safetensors").unlink()

    mf = resolve_model(model_dir)
    assert mf.weights == [model_dir.resolve() / s for s in sorted(shards)]
    assert {"model.safetensors.index.json", *shards} <= set(mf.files)

    (model_dir / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        ModelLoadError, match=r"model-00002-of-00002\.safetensors \(weight shards listed"
    ):
        resolve_model(model_dir)


def test_bad_json_names_the_file(model_dir):
    (model_dir / "config.json").write_text('{"model_type": "blip",')
    with pytest.raises(ModelLoadError) as exc:
        resolve_model(model_dir)
    assert str(exc.value).startswith(
        f"config.json in {model_dir.resolve()} is not valid JSON (line 1, column "
    )


def test_load_json(tmp_path):
    (tmp_path / "a.json").write_text('{"x": 1}')
    assert load_json(tmp_path / "a.json") == {"x": 1}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(
        ModelLoadError, match=r"list\.json in .* should hold a JSON object, not list"
    ):
        load_json(tmp_path / "list.json")
    with pytest.raises(ModelLoadError, match=r"^nope\.json is missing from "):
        load_json(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "blip-2"}, "describes a 'blip-2' model, not BLIP"),
        (
            {"architectures": ["BlipForQuestionAnswering"]},
            "is a BlipForQuestionAnswering checkpoint, not a captioning one",
        ),
    ],
)
def test_other_models_are_refused(model_dir, change, message):
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ModelLoadError, match=message):
        resolve_model(model_dir)


def test_onnx_directory_is_detected_by_its_manifest(tmp_path, tiny_checkpoint):
    onnx_dir = tmp_path / "exported"
    onnx_dir.mkdir()
    (onnx_dir / hub.ONNX_MANIFEST).write_text("{}")
    shutil.copy(tiny_checkpoint / "tokenizer.json", onnx_dir)
    mf = resolve_model(onnx_dir)
    assert (mf.kind, mf.config, mf.weights, mf.weight_files) == ("onnx", None, None, [])
    assert set(mf.files) == {hub.ONNX_MANIFEST, "tokenizer.json"}
    assert mf.revision == expected_revision(mf.files)

    shutil.copy(tiny_checkpoint / "config.json", onnx_dir)
    assert resolve_model(onnx_dir).config["model_type"] == "blip"


def test_revision_is_refused_for_a_directory(tiny_checkpoint):
    with pytest.raises(OptionsError, match="applies to hub ids only"):
        resolve_model(tiny_checkpoint, revision="main")


# --- what the user asked for -----------------------------------------------------------------------


def test_blipcap_model_env_is_honoured(tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("BLIPCAP_MODEL", str(tiny_checkpoint))
    assert resolve_model().model_id == str(tiny_checkpoint)
    assert resolve_model(None).path == tiny_checkpoint.resolve()


@pytest.mark.parametrize(
    "given", ["./no-such-model", "../no/such", "~/no-such-blip-dir", "a/b/c", "/no/such/dir"]
)
def test_missing_path_is_not_looked_up_on_the_hub(given, monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download", _must_not_be_called)
    with pytest.raises(ModelNotFoundError, match=r"does not exist \(no such directory: "):
        resolve_model(given)


def test_missing_path_object(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        resolve_model(tmp_path / "absent")


def test_a_file_is_not_a_model_directory(tiny_checkpoint):
    with pytest.raises(ModelLoadError, match="is a file, not a model directory"):
        resolve_model(str(tiny_checkpoint / "model.safetensors"))


def test_invalid_hub_id(monkeypatch):
    monkeypatch.setattr("huggingface_hub.snapshot_download", _must_not_be_called)
    with pytest.raises(
        ModelNotFoundError, match="neither an existing directory nor a valid hub model id"
    ):
        resolve_model("blip--large")


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("the hub was consulted")


# --- the Hugging Face cache ------------------------------------------------------------------------


def test_hub_id_resolves_offline_from_the_cache(tiny_checkpoint, tmp_path, monkeypatch):
    snapshot = fake_hub_cache(tmp_path / "hf-cache", DEFAULT_MODEL, tiny_checkpoint)
    hashed: list[str] = []
    real_hash = hub._hash_file
    monkeypatch.setattr(hub, "_hash_file", lambda p, s, n: hashed.append(n) or real_hash(p, s, n))

    mf = resolve_model()
    assert (mf.model_id, mf.revision, mf.source, mf.kind) == (DEFAULT_MODEL, COMMIT, "hub", "hf")
    assert mf.path == snapshot.resolve()
    assert mf.weights == mf.path / "model.safetensors"
    assert mf.config["model_type"] == "blip"
    assert set(mf.files) == TINY_FILES
    for name, digest in mf.files.items():
        assert digest == sha256(tiny_checkpoint / name), name
    # The weights' digest is the LFS blob name: the 8 MB file was not read.
    assert "model.safetensors" not in hashed and "config.json" in hashed


def test_hub_id_with_explicit_cache_dir_and_commit(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    cache = tmp_path / "elsewhere"
    fake_hub_cache(cache, "Salesforce/blip-image-captioning-base", tiny_checkpoint)
    mf = resolve_model("Salesforce/blip-image-captioning-base", revision=COMMIT, cache_dir=cache)
    assert (mf.revision, mf.model_id) == (COMMIT, "Salesforce/blip-image-captioning-base")
    with pytest.raises(ModelNotFoundError, match=r"\(revision v9\) is not available"):
        resolve_model("Salesforce/blip-image-captioning-base", revision="v9", cache_dir=cache)


def test_hub_snapshot_with_only_pytorch_bin(tmp_path):
    fake_hub_cache(tmp_path / "hf-cache", "someone/blip-bin", checkpoint("tiny", safetensors=False))
    mf = resolve_model("someone/blip-bin")
    assert mf.weights == mf.path / "pytorch_model.bin"
    assert mf.revision == COMMIT


def test_incomplete_hub_snapshot_names_the_missing_file(tiny_checkpoint, tmp_path):
    snapshot = fake_hub_cache(tmp_path / "hf-cache", DEFAULT_MODEL, tiny_checkpoint)
    (snapshot / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError) as exc:
        resolve_model(DEFAULT_MODEL)
    msg = str(exc.value)
    assert msg == (
        f"Missing from {snapshot.resolve()}: preprocessor_config.json (or processor_config.json). "
        f"The cached copy of {DEFAULT_MODEL} is incomplete. Fetch it again with: "
        f"{FETCH_LARGE} --cache-dir {(tmp_path / 'hf-cache').resolve()}"
    )


def test_empty_cache_offline_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model()
    folder = tmp_path / "hf-cache" / "models--Salesforce--blip-image-captioning-large"
    assert str(exc.value) == "\n".join(
        [
            f"Model '{DEFAULT_MODEL}' is not available: it is not in the Hugging Face cache and "
            "HF_HUB_OFFLINE is set, so it cannot be downloaded.",
            f"Looked in: {folder}",
            "Fix it in one of these ways:",
            "  - with network access, fill the cache (unset HF_HUB_OFFLINE to let blipcap download it itself):",
            f"      {FETCH_LARGE}",
            "  - on a machine with network access, download it to a folder, copy that folder here and "
            "point blipcap at it:",
            f"      {FETCH_LARGE} --local-dir blip-image-captioning-large",
            "      blipcap caption --model ./blip-image-captioning-large ...   "
            "(or: export BLIPCAP_MODEL=./blip-image-captioning-large)",
        ]
    )


def test_not_cached_lists_what_the_cache_holds(tiny_checkpoint, tmp_path):
    fake_hub_cache(tmp_path / "hf-cache", "Salesforce/blip-image-captioning-base", tiny_checkpoint)
    with pytest.raises(
        ModelNotFoundError, match="Models in that cache: Salesforce/blip-image-captioning-base\n"
    ):
        resolve_model("Salesforce/blip-image-captoning-large", offline=True)


def test_explicit_offline_and_cache_dir_are_reported(tmp_path):
    cache = tmp_path / "mine"
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model(DEFAULT_MODEL, offline=True, cache_dir=cache)
    msg = str(exc.value)
    assert "not in the Hugging Face cache and offline=True was requested." in msg
    assert f"Looked in: {cache / 'models--Salesforce--blip-image-captioning-large'}\n" in msg
    assert f"{FETCH_LARGE} --cache-dir {cache}\n" in msg


def _http_error(cls, status: int):
    import httpx2

    url = "https://huggingface.co/api/models/Salesforce/blip-image-captoning-large/revision/main"
    return cls(
        "404 Client Error", response=httpx2.Response(status, request=httpx2.Request("GET", url))
    )


def test_unknown_repo_on_the_hub(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    def fake_snapshot_download(repo_id, **kwargs):
        assert kwargs["local_files_only"] is False
        raise _http_error(RepositoryNotFoundError, 404)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model("Salesforce/blip-image-captoning-large", offline=False)
    assert str(exc.value).startswith(
        "There is no model 'Salesforce/blip-image-captoning-large' on the Hugging Face hub (or it is "
        "private). Check the spelling; supported models: Salesforce/blip-image-captioning-large, "
        "Salesforce/blip-image-captioning-base."
    )


def test_unreachable_hub(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def fake_snapshot_download(repo_id, **kwargs):
        raise LocalEntryNotFoundError(
            "Got: ConnectError: [Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    with pytest.raises(
        ModelNotFoundError, match=r"the hub could not be reached \(Got: ConnectError: "
    ):
        resolve_model(DEFAULT_MODEL, offline=False)


def test_download_command():
    assert hub.download_command(DEFAULT_MODEL) == FETCH_LARGE
    assert hub.download_command("a/b", revision="v1", local_dir="out") == (
        'hf download a/b --include "*.json" --include "*.safetensors" --include "*.txt" '
        "--revision v1 --local-dir out"
    )


def test_download_command_runs_without_hf_on_path(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(python))
    # Not on PATH and not beside this Python: through this Python.
    assert hub.download_command("a/b").startswith(
        f"{python} -m huggingface_hub.cli.hf download a/b "
    )
    # Beside this Python (a virtual environment that is not activated): its full path.
    (python.parent / "hf").write_text("#!/bin/sh\n")
    (python.parent / "hf").chmod(0o755)
    assert hub.download_command("a/b").startswith(f"{python.parent / 'hf'} download a/b ")


def test_the_module_named_for_the_cli_runs():
    import subprocess

    p = subprocess.run(
        [sys.executable, "-m", "huggingface_hub.cli.hf", "download", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0 and "--include" in p.stdout, p.stderr
