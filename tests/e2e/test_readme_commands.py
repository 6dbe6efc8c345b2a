"""Every shell command the README shows runs as written, or says why it cannot run here.

The README's ``bash`` blocks, and the commands its pre-commit and GitHub Action
examples run, are split into commands. Each runs with bash, in README order, in
a sandbox folder holding the files the README names (``photos/``, ``a.jpg``,
``site/``, ``scan.jpg``, ``letter.pdf``, ``~/Pictures`` ...), with ``HOME``
inside the sandbox and ``BLIPCAP_MODEL`` set to a random tiny checkpoint, and
must exit with the status the README promises. The only edit is the server's
port: ``blipcap serve`` gets a free one instead of 8000.

A command that cannot run on a test machine (the model hub, a GPU, another
host, the suite itself) is listed in ``NOT_RUN`` with the reason and where it is
tested instead. A README command that is neither run nor listed fails the test,
and so does a listed command the README no longer has.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent

NOT_RUN = {
    "make demo": "downloads the 1.9 GB default model from the hub, which test machines cannot "
    "reach; the same caption command runs below on a random checkpoint",
    "make test": "the test suite itself (.ci/run runs it)",
    "make test-fast": "the test suite itself, without the slow tests",
    "make lint": "ruff over the checkout; it re-creates .venv when pyproject.toml is newer",
    "make clean": "would delete the virtual environment these tests run in",
    "make bench": "a benchmark of the full-size shapes (benchmarks/core.py), minutes of CPU",
    'pip install ".[torch]"': "CI's `make setup` installs the checkout with every extra",
    'pip install ".[onnx]"': "tests/e2e/test_torch_free_install.py installs it into a fresh venv",
    'pip install ".[all]"': "CI's `make setup` installs the checkout with every extra",
    "pip install build && python -m build --wheel": "needs the network for the build "
    "environment; checked by hand (see tests/unit/test_install_docs.py for the lines' form)",
    'pip install "./blipcap-0.1.0-py3-none-any.whl[onnx]"': "follows the wheel build",
    'pip install "blipcap[torch,index,ocr]"': "adds extras to an installed blipcap; "
    "CI's `make setup` installs them all",
    'pip install "blipcap[torch,ocr]"': "as above",
    "pip install 'blipcap[server]'": "as above",
    'pip install "blipcap[export]"': "as above",
    'pip install "blipcap[onnx]"': "as above",
    "pip install 'blipcap[torch,ray]'": "as above",
    "pip install ./.blipcap": "the GitHub Action's checkout of blipcap; CI installs the checkout",
    "blipcap caption https://example.org/cat.jpg --beams 3 --num-captions 3": "needs the "
    "internet; URL inputs are fetched from a local server in tests/unit/test_fetch.py",
    'curl -H \'Content-Type: application/json\' -d \'{"images": [{"url": '
    '"https://example.org/cat.jpg"}]}\' http://127.0.0.1:8000/v1/captions': "needs the "
    "internet; tests/integration/test_server_edges.py captions a URL through the service",
    "blipcap index /srv/photos --db postgresql://photos@db.internal/photos": "another host; "
    "tests/integration/test_postgres_index.py indexes into a local PostgreSQL",
    "RAY_ADDRESS=head:6379 blipcap caption --engine ray s3://bucket/photos/ --output "
    "s3://bucket/captions/": "a Ray cluster and S3; the local Ray line runs",
    "curl -LO https://storage.googleapis.com/sfr-vision-language-research/datasets/"
    "coco_karpathy_test_gt.json": "downloads COCO; tests/integration/test_eval_cli.py scores "
    "a local annotation file",
    "curl -LO http://images.cocodataset.org/zips/val2014.zip && unzip -q val2014.zip": "as above",
    "blipcap eval --annotations coco_karpathy_test_gt.json --images val2014 --model "
    "Salesforce/blip-image-captioning-large --device cuda --dtype float32 --preset coco "
    "--predictions-out coco_karpathy_test_preds.json --json > coco_karpathy_test_scores.json": (
        "the real weights on a GPU; tests/integration/test_eval_cli.py runs eval on a "
        "random checkpoint"
    ),
    "blipcap bench --device cuda --dtype bfloat16 --batch-sizes 1,8,32,128 --beams 1,3 "
    "--out bench/gpu": "a GPU; tests/integration/test_bench.py runs bench on the CPU",
    "python benchmarks/cold_start.py": "a benchmark (five cold starts); "
    "tests/integration/test_cpu_bench.py runs its code",
}

# What the README promises besides exit status 0.
STATUS = {
    "blipcap alt-text site/ --check": 1,  # "exit 1 when anything needs fixing"
    "blipcap alt-text --check index.html": 1,  # the pre-commit hook, on a page to fix
    "blipcap alt-text site/ --check --report alt-text.sarif": 1,  # the Action: findings
}


def commands() -> list[str]:
    """The README's commands, in order: bash blocks split at lines, comments dropped."""
    text = README.read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                found.append(re.sub(r"\s+", " ", line))
    for block in re.findall(r"^```yaml\n(.*?)^```", text, flags=re.S | re.M):
        # A pre-commit hook's entry gets the changed files appended: one page here.
        found += [f"{m} index.html" for m in re.findall(r"^\s*entry: (.+)$", block, flags=re.M)]
        found += [re.sub(r"\s+#\s.*$", "", m) for m in re.findall(r"- run: (.+)$", block, re.M)]
    return found


def test_every_readme_command_is_run_or_says_why_not():
    cmds = commands()
    assert len(cmds) > 40, cmds
    stale = sorted(set(NOT_RUN) - set(cmds))
    assert not stale, f"NOT_RUN lists commands the README no longer has: {stale}"
    assert not sorted(set(STATUS) - set(cmds)), "STATUS lists commands the README lacks"


def text_image(path: Path, lines: list[str], size=(480, 200)) -> None:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=28)
    for i, line in enumerate(lines):
        draw.text((16, 16 + 40 * i), line, fill="black", font=font)
    image.save(path)


def sandbox(root: Path) -> None:
    """The files the README's commands name."""
    rng = np.random.default_rng(0)

    def photo(path: Path, size=(96, 128)) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)

    for name in (
        "photos/beach.jpg",
        "photos/garden.png",
        "a.jpg",
        "b.png",
        "photo.jpg",
        "cat.jpg",
        "shots/2024/one.jpg",
        "shots/two.jpg",
        "site/img/logo.png",
        "docs/pic.png",
        "home/Pictures/holiday.jpg",
        "tests/golden-images/one.png",
        "tests/golden-images/two.jpg",
    ):
        photo(root / name)
    text_image(root / "scan.jpg", ["Dear Ann,", "see you on Monday."])
    text_image(root / "screenshot.png", ["Settings", "Save changes"])
    (root / "home/Pictures/scans").mkdir(parents=True)
    text_image(root / "home/Pictures/scans/invoice.png", ["INVOICE 4521", "Total due 12.50"])
    pages = []
    for lines in (["Dear Ann,", "thank you."], ["INVOICE 4521", "Total due"], ["Page two"]):
        pages.append(root / f".page{len(pages)}.png")
        text_image(pages[-1], lines)
    first, *rest = [Image.open(p) for p in pages]
    first.save(root / "letter.pdf", "PDF", resolution=150)
    rest[0].save(root / "invoice.pdf", "PDF", resolution=150, save_all=True, append_images=rest[1:])
    # An image with no alt (its caption needs a person: random weights are unsure), and a
    # linked image whose link says where it goes (alt="" is written without a person).
    page = (
        '<!doctype html><html lang="en"><body><img src="img/logo.png">'
        '<a href="/">Home <img src="img/logo.png" alt="logo.png"></a></body></html>\n'
    )
    (root / "site/index.html").write_text(page)
    (root / "index.html").write_text(page.replace("img/", "site/img/"))
    (root / "docs/page.md").write_text("# Trip\n\n![](pic.png)\n")
    # `blipcap eval --references-from` reads the int8 export the ONNX section writes.
    (root / "blip-onnx-int8").symlink_to("blip-large-int8")


class Server:
    """`blipcap serve` as written, on a free port, until the block's last command ran."""

    def __init__(self, command: str, cwd: Path, env: dict) -> None:
        self.port = free_port()
        # A file, not a pipe: a pipe nobody reads fills up and stalls the server's logging.
        self.log = cwd / "serve.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["bash", "-c", f"exec {command} --port {self.port}"],
                cwd=cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        self.close()
        raise AssertionError(f"`{command}` did not become ready: {self.stderr()}")

    def stderr(self) -> str:
        return self.log.read_bytes().decode(errors="replace")[-2000:]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_all(root: Path, env: dict) -> list[str]:
    """Run every command not in NOT_RUN in README order; return what went wrong."""
    failures = []
    server = None
    try:
        for command in commands():
            if command in NOT_RUN:
                continue
            if command == "blipcap serve":
                server = Server(command, root, env)
                continue
            if server is not None:
                command = command.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            start = time.monotonic()
            p = subprocess.run(
                ["bash", "-o", "pipefail", "-c", command],
                cwd=root,
                env=env,
                capture_output=True,
                timeout=900,
            )
            print(f"{time.monotonic() - start:6.1f} s  {command}")  # shown when the test fails
            expected = STATUS.get(command, 0)
            if p.returncode != expected:
                failures.append(
                    f"`{command}` exited {p.returncode}, not {expected}:\n"
                    f"{p.stderr.decode(errors='replace')[-1500:]}"
                )
            elif command.startswith("curl") and b'"caption"' not in p.stdout:
                failures.append(f"`{command}` answered {p.stdout[-500:]!r}")
    finally:
        if server is not None:
            server.close()
    return failures


@pytest.mark.slow
def test_readme_commands_run_as_written(tiny_checkpoint, tmp_path):
    for tool in ("blipcap", "curl"):
        assert shutil.which(tool, path=f"{BIN}:/usr/bin:/bin"), f"{tool} is not installed"
    root = tmp_path / "readme"
    root.mkdir()
    sandbox(root)
    page_before = (root / "site/index.html").read_text()
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(root / "home"),
        "BLIPCAP_MODEL": str(tiny_checkpoint),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    failures = run_all(root, env)
    assert not failures, "\n\n".join(failures)
    # What the commands promise to write.
    assert (root / "captions.jsonl").stat().st_size > 0
    assert (root / "letter.md").read_text().strip()
    assert (root / "tests/golden.jsonl").stat().st_size > 0
    assert 'alt=""' in (root / "site/index.html").read_text(), "--write edits the page"
    assert (root / "site/index.html.bak").read_text() == page_before, "--backup keeps FILE.bak"
    assert (root / "report.html").exists() and (root / "alt.sarif").exists()
    assert list((root / "captions").glob("*.parquet")), "the Ray job writes Parquet"
    assert list((root / "home/Pictures").glob("*.xmp")), "--write-xmp writes sidecars"
