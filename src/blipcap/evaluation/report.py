"""Human-readable tables for ``blipcap eval`` and ``blipcap bench`` (Markdown, which also reads well in a terminal)."""

from __future__ import annotations

from typing import Any

from .bench import MEMORY_METHODS
from .environment import describe_hardware
from .metrics import METRICS


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.0f} MiB"


def _num(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def metrics_markdown(columns: dict[str, dict[str, float]]) -> str:
    """One row per metric, one column per image set (e.g. overall and NoCaps domains), x100."""
    names = [m for m in (*METRICS, "SPICE") if any(m in c for c in columns.values())]
    header = "| metric | " + " | ".join(columns) + " |"
    rule = "|:--|" + "--:|" * len(columns)
    rows = [
        f"| {name} | "
        + " | ".join(_num(c[name] * 100, 1) if name in c else "-" for c in columns.values())
        + " |"
        for name in names
    ]
    return "\n".join([header, rule, *rows])


def bench_markdown(doc: dict[str, Any]) -> str:
    """The Markdown table of a ``blipcap bench`` JSON document."""
    p = doc["provenance"]
    s = doc["settings"]
    lines = ["# blipcap bench", ""]
    model = f"{p.get('model')}" + (f" (revision {p['revision']})" if p.get("revision") else "")
    lines.append(
        f"- model: {model}; backend {p.get('backend')}, device {p.get('device')}, "
        f"dtype {p.get('dtype')}"
    )
    if p.get("random_weights"):
        lines.append(
            "- weights: random (a test checkpoint). Speed and memory at a forced length do not "
            "depend on weight values; no caption from this run is meaningful."
        )
    lines.append(f"- hardware: {describe_hardware(doc['hardware'])}")
    libs = ", ".join(f"{k} {v}" for k, v in doc["libraries"].items())
    lines.append(f"- libraries: {libs}")
    lines.append(
        f"- inputs: {s['inputs_description']}; every configuration generates exactly its number "
        f"of new tokens (no prompt); {s['batches']} timed batch(es) after 1 warm-up batch"
    )
    methods = sorted({m["memory_method"] for m in doc["measurements"] if m.get("memory_method")})
    for method in methods:
        lines.append(f"- peak memory: {MEMORY_METHODS.get(method, method)}")
    lines.append(f"- run time: {doc['seconds']:.0f} s of a {s['max_time_s']:g} s budget")
    lines += [
        "",
        "| batch | beams | new tokens | images/s | s/image | peak memory | status |",
        "|--:|--:|--:|--:|--:|--:|:--|",
    ]
    for m in doc["measurements"]:
        status = m["status"] if not m.get("note") else f"{m['status']}: {m['note']}"
        status = status.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {m['batch_size']} | {m['num_beams']} | {m['length']} | "
            f"{_num(m.get('images_per_s'), 2)} | {_num(m.get('seconds_per_image'), 3)} | "
            f"{format_bytes(m.get('peak_memory_bytes'))} | {status} |"
        )
    return "\n".join(lines) + "\n"
