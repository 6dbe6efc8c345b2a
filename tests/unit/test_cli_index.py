"""``blipcap index --db``: a path in a missing folder is refused, not created."""

from __future__ import annotations

from click.testing import CliRunner

from blipcap.cli import main


def test_db_in_a_missing_folder_is_refused(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    db = tmp_path / "nonexistent" / "dir" / "x.db"
    result = CliRunner().invoke(main, ["index", str(photos), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert f"the folder {db.parent} does not exist" in result.output
    assert "mkdir -p" in result.output
    assert not (tmp_path / "nonexistent").exists()


def test_db_in_an_existing_folder_is_created(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    db = tmp_path / "x.db"
    result = CliRunner().invoke(main, ["index", str(photos), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert db.exists()


def test_decoding_flags_reach_the_model_as_caption_options(tmp_path, monkeypatch):
    """`index --preset coco --beams 5` captions with the coco preset's options, five beams."""
    from PIL import Image

    from tests.fakes import FakeCaptioner, LengthEmbedder, register

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(photos / "red.png")
    fake = FakeCaptioner()
    register(monkeypatch, fake)
    monkeypatch.setattr("blipcap.index.embeddings.get_embedder", lambda: LengthEmbedder())
    args = ["index", str(photos), "--db", str(tmp_path / "x.db"), "--ocr", "none"]
    result = CliRunner().invoke(main, [*args, "--preset", "coco", "--beams", "5"])
    assert result.exit_code == 0, result.output
    [(_, options)] = fake.calls
    assert options.num_beams == 5 and options.prompt == "a picture of "  # coco, then --beams
