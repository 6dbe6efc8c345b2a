"""The install commands in the README and docs work for a package that is not on PyPI."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def pip_installs(text: str) -> list[str]:
    return [m.strip() for m in re.findall(r"pip install ([^\n#`]+)", text)]


def installs_blipcap_by_name(args: str) -> bool:
    return any(re.fullmatch(r"""["']?blipcap(\[[\w,]+\])?["']?""", a) for a in args.split())


def test_the_install_section_installs_from_a_checkout_or_a_wheel():
    blocks = re.findall(
        r"```bash\n(.*?)```", section((ROOT / "README.md").read_text(), "Install"), flags=re.S
    )
    installs = [args for block in blocks for args in pip_installs(block)]
    blipcap = [args for args in installs if not args.startswith("build")]
    assert len(blipcap) >= 4, installs
    assert not [args for args in blipcap if installs_blipcap_by_name(args)], blipcap
    assert all(re.search(r"""["']?\./?[\w.-]*\[""", args) for args in blipcap), blipcap


def test_ci_examples_install_blipcap_from_a_repository_they_check_out():
    yaml_blocks = [
        (doc.name, block)
        for doc in DOCS
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)
    ]
    runs = [(name, block) for name, block in yaml_blocks if "pip install" in block]
    assert len(runs) >= 2
    for name, block in runs:
        assert "actions/checkout" in block, name
        for args in pip_installs(block):
            assert not installs_blipcap_by_name(args), (name, args)
