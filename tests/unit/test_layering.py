"""The package's floors: which module may import which (lazy imports included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import blipcap

SRC = Path(blipcap.__file__).parent
ROOT = SRC.parent.parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every blipcap module a file imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("blipcap"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("blipcap"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _modules_under(folder: str) -> list[Path]:
    return sorted((SRC / folder).rglob("*.py"))


def test_backends_never_import_the_exporter():
    offenders = {
        _module_name(p): sorted(m for m in _imports(p) if m.startswith("blipcap.export"))
        for p in _modules_under("backends")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_onnx_format_lives_with_its_reader_and_the_exporter_imports_it():
    assert "blipcap.backends.onnx_format" in _imports(SRC / "backends" / "onnx.py")
    assert "blipcap.backends.onnx_format" in _imports(SRC / "export" / "onnx.py")
    assert not (SRC / "export" / "manifest.py").exists()


def test_hub_does_not_import_the_test_checkpoints():
    assert not any(m.startswith("blipcap.testing") for m in _imports(SRC / "hub.py"))


def test_the_index_store_interface_imports_no_store():
    store = _imports(SRC / "index" / "store.py")
    assert not store & {"blipcap.index.sqlite", "blipcap.index.postgres", "blipcap.index.open"}
    for impl in ("sqlite.py", "postgres.py"):
        assert "blipcap.index.open" not in _imports(SRC / "index" / impl)


def test_the_version_is_written_once_and_read_from_its_module():
    version_py = SRC / "version.py"
    assert _imports(version_py) == set()
    assert re.search(r'^__version__ = "[^"]+"$', version_py.read_text(), re.M)
    readers = [
        _module_name(p)
        for p in SRC.rglob("*.py")
        if p != version_py and re.search(r"from \.+ import .*__version__", p.read_text())
    ]
    assert readers == []
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = {attr = "blipcap.version.__version__"}' in pyproject
    assert blipcap.__version__ is __import__("blipcap.version").version.__version__


def _long_functions(paths: list[Path], limit: int) -> list[str]:
    long = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > limit:
                    long.append(f"{_module_name(path)}.{node.name}")
    return long


def test_documents_is_a_package_of_small_modules():
    modules = _modules_under("documents")
    assert {p.stem for p in modules} >= {"rapidocr", "tesseract", "layout", "pdf", "document"}
    assert {_module_name(p): len(p.read_text().splitlines()) > 600 for p in modules} == {
        _module_name(p): False for p in modules
    }
    assert _long_functions(modules, 80) == []


def test_documents_keeps_its_public_names():
    import blipcap.documents as documents

    for name in documents.__all__:
        assert getattr(documents, name) is not None
    assert {"read_document", "ocr_image", "RapidOcrEngine", "fuse_description"} <= set(
        documents.__all__
    )


def test_the_exporter_has_no_function_over_80_lines():
    assert _long_functions(_modules_under("export"), 80) == []
