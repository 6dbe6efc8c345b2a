"""XMP: read descriptions people already wrote, and write captions into sidecars.

Reading looks at sidecars (``photo.jpg.xmp`` as darktable/digiKam/Immich write
them, and ``photo.xmp`` as Lightroom/exiftool do) and at the XMP packet
embedded in the image. Writing (``blipcap index --write-xmp``) puts the caption
in ``dc:description`` with ``blipcap:*`` provenance that marks it machine
generated. A description a person wrote is never overwritten: then the caption
goes only into ``blipcap:Caption``, beside it. Every other property in an
existing sidecar (ratings, keywords, edits) is kept, and the file is replaced
atomically (temporary file, fsync, rename), so a crash leaves the old sidecar
or the new one, never half of one.
"""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import replace_file

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "blipcap": "urn:blipcap:xmp:1.0/",
}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
MAX_SIDECAR_BYTES = 4 * 2**20

for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


@dataclass(frozen=True)
class XmpInfo:
    description: str | None
    machine_generated: bool
    """True when the description is one blipcap wrote (so it may be replaced)."""
    path: str | None = None
    caption: str | None = None
    """The caption blipcap last stored (``blipcap:Caption``)."""


def sidecar_candidates(image_path: str | os.PathLike[str]) -> list[Path]:
    p = Path(image_path)
    return [p.with_name(p.name + ".xmp"), p.with_suffix(".xmp"), p.with_suffix(".XMP")]


def find_sidecar(image_path: str | os.PathLike[str]) -> Path | None:
    for candidate in sidecar_candidates(image_path):
        if candidate.is_file():
            return candidate
    return None


def parse_xmp(data: bytes) -> ET.Element | None:
    """Parse an XMP document; None for anything unreadable or hostile (DTDs are refused)."""
    if len(data) > MAX_SIDECAR_BYTES or b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        return None
    try:
        return ET.fromstring(data)
    except ET.ParseError:
        return None


def _description_node(root: ET.Element) -> ET.Element | None:
    return root.find(f".//{_q('rdf', 'Description')}")


def description_of(root: ET.Element) -> XmpInfo:
    """The x-default (or first) dc:description, and whether blipcap wrote it."""
    text = None
    for desc in root.iter(_q("dc", "description")):
        items = desc.findall(f".//{_q('rdf', 'li')}")
        chosen = next(
            (li for li in items if li.get(XML_LANG) == "x-default"), items[0] if items else None
        )
        text = (chosen.text if chosen is not None else desc.text) or None
        if text:
            text = text.strip() or None
        break
    ours = any(
        (el.text or "").strip().lower() == "true"
        for el in root.iter(_q("blipcap", "MachineGenerated"))
    )
    caption = next((el.text for el in root.iter(_q("blipcap", "Caption"))), None)
    return XmpInfo(description=text, machine_generated=ours, caption=caption)


def read_sidecar(image_path: str | os.PathLike[str]) -> XmpInfo | None:
    sidecar = find_sidecar(image_path)
    if sidecar is None:
        return None
    try:
        root = parse_xmp(sidecar.read_bytes())
    except OSError:
        return None
    if root is None:
        return None
    info = description_of(root)
    return XmpInfo(info.description, info.machine_generated, str(sidecar), info.caption)


def read_embedded(info: dict[str, Any]) -> str | None:
    """dc:description from the XMP packet Pillow found in the image (``Image.info``)."""
    packet = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if not packet:
        return None
    if isinstance(packet, str):
        packet = packet.encode("utf-8", errors="replace")
    root = parse_xmp(packet.strip(b"\x00 \n"))
    return description_of(root).description if root is not None else None


def _skeleton() -> ET.Element:
    root = ET.Element(_q("x", "xmpmeta"))
    rdf = ET.SubElement(root, _q("rdf", "RDF"))
    desc = ET.SubElement(rdf, _q("rdf", "Description"))
    desc.set(_q("rdf", "about"), "")
    return root


def _set_lang_alt(parent: ET.Element, tag: str, text: str) -> None:
    for old in parent.findall(tag):
        parent.remove(old)
    node = ET.SubElement(parent, tag)
    alt = ET.SubElement(node, _q("rdf", "Alt"))
    li = ET.SubElement(alt, _q("rdf", "li"))
    li.set(XML_LANG, "x-default")
    li.text = text


def _set_simple(parent: ET.Element, name: str, value: str | None) -> None:
    tag = _q("blipcap", name)
    parent.attrib.pop(tag, None)
    for old in parent.findall(tag):
        parent.remove(old)
    if value is not None:
        ET.SubElement(parent, tag).text = value


def write_sidecar(
    image_path: str | os.PathLike[str],
    caption: str,
    provenance: dict[str, Any] | None,
    *,
    embedded_description: str | None = None,
) -> tuple[Path, str]:
    """Write ``caption`` into the image's sidecar. Returns (sidecar path, what happened):
    "created", "updated", or "kept" (a person's description stays; the caption is
    stored in ``blipcap:Caption`` only)."""
    existing = find_sidecar(image_path)
    target = existing or sidecar_candidates(image_path)[0]
    root = None
    if existing is not None:
        data = existing.read_bytes()
        _register_prefixes(data)
        root = parse_xmp(data)
        if root is None:
            raise ValueError(f"{existing}: unreadable XMP sidecar; left as it is")
    root = root if root is not None else _skeleton()
    desc = _description_node(root)
    if desc is None:
        rdf = root.find(f".//{_q('rdf', 'RDF')}")
        if rdf is None:
            raise ValueError(f"{target}: XMP without rdf:RDF; left as it is")
        desc = ET.SubElement(rdf, _q("rdf", "Description"))
        desc.set(_q("rdf", "about"), "")
    info = description_of(root)
    human = (info.description and not info.machine_generated) or (
        embedded_description and not info.description
    )
    if human:
        outcome = "kept"
    else:
        _set_lang_alt(desc, _q("dc", "description"), caption)
        outcome = "updated" if existing is not None else "created"
    p = provenance or {}
    _set_simple(desc, "Caption", caption)
    _set_simple(desc, "MachineGenerated", None if human else "True")
    _set_simple(desc, "Model", p.get("model"))
    _set_simple(desc, "Revision", p.get("revision"))
    _set_simple(desc, "Backend", p.get("backend"))
    _set_simple(desc, "Version", p.get("blipcap_version"))
    buf = io.BytesIO()
    ET.ElementTree(root).write(buf, encoding="utf-8", xml_declaration=False)
    atomic_write(target, buf.getvalue() + b"\n")
    return target, outcome


def _register_prefixes(data: bytes) -> None:
    """Keep the file's own namespace prefixes (ElementTree would rename them ns0, ns1...)."""
    try:
        for _, (prefix, uri) in ET.iterparse(io.BytesIO(data), events=("start-ns",)):
            if prefix and not prefix.startswith("ns"):
                ET.register_namespace(prefix, uri)
    except (ET.ParseError, ValueError):
        pass


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, never a mix."""
    # mkstemp makes the file private (0600); a sidecar is as readable as its photo.
    replace_file(path, data, mode=path.stat().st_mode & 0o7777 if path.exists() else 0o644)
