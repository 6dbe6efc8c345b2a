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
