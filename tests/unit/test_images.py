"""Safe image loading: the fault matrix of docs/research reliability section 1.

Fixtures are generated here with Pillow (or written byte by byte where Pillow
cannot write the format), so every test shows exactly what it feeds in.
"""

from __future__ import annotations

import io
import struct
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import GifImagePlugin, Image, ImageFile

from blipcap import image_guard, images
from blipcap.engine import decode_ahead
from blipcap.errors import CorruptImageError, ImageTooLargeError, InputError, UnsupportedFormatError
from blipcap.images import (
    ImageInput,
    ImageLimits,
    expand_inputs,
    load_image,
    load_input,
)
from blipcap.testing import gif_frame_flood, png_chunk

RED, GREEN, BLUE, WHITE, GRAY = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 255),
    (128, 128, 128),
)


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims width x height; the pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def noisy_rgb(size=(256, 256), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_allowed_formats_decode_to_rgb(fmt):
    im = Image.new("RGB", (40, 30), (200, 30, 30))
    out = load_image(encode(im, fmt))
    assert out.mode == "RGB" and out.size == (40, 30)
    r, g, b = out.getpixel((20, 15))
    assert r > 180 and g < 60 and b < 60  # lossy formats are close, not exact


def test_avif_decodes_when_pillow_has_it():
    if "AVIF" not in images.allowed_formats():
        pytest.skip("this Pillow build has no AVIF codec")
    out = load_image(encode(Image.new("RGB", (32, 32), (20, 20, 220)), "AVIF"))
    assert out.mode == "RGB" and out.size == (32, 32)
    assert out.getpixel((16, 16))[2] > 180


def test_heif_decodes_with_pillow_heif():
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    data = encode(Image.new("RGB", (64, 48), (220, 20, 20)), "HEIF")
    assert data[4:12] == b"ftypheic"
    out = load_image(data)
    assert out.mode == "RGB" and out.size == (64, 48)
    r, g, b = out.getpixel((32, 24))
    assert r > 180 and g < 60 and b < 60


HEIC_HEADER = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


def test_heif_without_plugin_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # makes `import pillow_heif` fail
    monkeypatch.setattr(image_guard, "_heif_state", None)
    with pytest.raises(UnsupportedFormatError) as info:
        load_image(HEIC_HEADER, name="phone.heic")
    assert str(info.value) == (
        "phone.heic: is a HEIF/HEIC image, but it needs pillow-heif; "
        "install HEIF support with: pip install 'blipcap[heif]'"
    )
    assert "HEIF" not in images.allowed_formats()


def test_heif_with_vulnerable_libheif_is_refused(monkeypatch):
    import types

    def register():
        raise AssertionError("an old libheif must not be registered")

    fake = types.SimpleNamespace(libheif_version=lambda: "1.17.6", register_heif_opener=register)
    monkeypatch.setitem(sys.modules, "pillow_heif", fake)
    monkeypatch.setattr(image_guard, "_heif_state", None)
    with pytest.raises(
        UnsupportedFormatError, match=r"libheif 1\.17\.6, which has known memory-safety bugs"
    ):
        load_image(HEIC_HEADER)


def _psd_bytes() -> bytes:
    width = height = 4
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    return (
        header
        + struct.pack(">III", 0, 0, 0)
        + struct.pack(">H", 0)
        + b"\x80" * (3 * width * height)
    )


def _fits_bytes() -> bytes:
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    2",
    ]
    cards += ["NAXIS1  =                    4", "NAXIS2  =                    4", "END"]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii")
    return header + (b"\x40" * 16).ljust(2880, b"\x00")


REFUSED = {
    "EPS": lambda: encode(Image.new("RGB", (8, 8), RED), "EPS"),
    "TGA": lambda: encode(Image.new("RGB", (8, 8), RED), "TGA"),
    "ICO": lambda: encode(Image.new("RGB", (16, 16), RED), "ICO"),
    "PSD": _psd_bytes,
    "FITS": _fits_bytes,
    "PPM": lambda: encode(Image.new("RGB", (8, 8), RED), "PPM"),
    "PCX": lambda: encode(Image.new("RGB", (8, 8), RED), "PCX"),
    "JPEG2000": lambda: encode(Image.new("RGB", (8, 8), RED), "JPEG2000"),
}


@pytest.mark.parametrize("fmt", sorted(REFUSED))
def test_risky_formats_renamed_png_are_refused_by_name(fmt, tmp_path):
    data = REFUSED[fmt]()
    # The sample is real: Pillow, left unrestricted, identifies and opens it.
    assert Image.open(io.BytesIO(data)).format == fmt
    path = tmp_path / "innocent.png"
    path.write_bytes(data)
    with pytest.raises(UnsupportedFormatError) as info:
        load_image(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: is in {fmt} format, which blipcap refuses")
    assert "Allowed formats: JPEG, PNG, WEBP, GIF, BMP, TIFF" in msg


def test_spider_is_refused_even_without_magic_bytes():
    data = encode(Image.new("F", (8, 8), 1.0), "SPIDER")
    assert Image.open(io.BytesIO(data)).format == "SPIDER"
    with pytest.raises(UnsupportedFormatError, match="not an image"):
        load_image(data)


def test_eps_is_never_handed_to_ghostscript(monkeypatch):
    from PIL import EpsImagePlugin

    def fail(*args, **kwargs):
        raise AssertionError("Ghostscript was invoked")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", fail)
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", fail)
    with pytest.raises(UnsupportedFormatError):
        load_image(REFUSED["EPS"]())


def test_html_named_jpg(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("<!DOCTYPE html>\n<html><body>404 Not Found</body></html>")
    with pytest.raises(UnsupportedFormatError) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}: not an image: it looks like an HTML page.")


def test_pdf_points_to_document_command():
    with pytest.raises(UnsupportedFormatError, match="blipcap document"):
        load_image(b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n")


def test_random_bytes():
    data = np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    data = b"\x13\x37" + data[2:]  # make sure no magic number happens to match
    with pytest.raises(
        UnsupportedFormatError, match=r"^<bytes>: not an image: it looks like unrecognized bytes"
    ):
        load_image(data)


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(CorruptImageError) as info:
        load_image(path)
    assert str(info.value).startswith(f"{path}: empty (0 bytes).")


def test_truncated_jpeg_half():
    data = encode(noisy_rgb(), "JPEG", quality=90)
    with pytest.raises(
        CorruptImageError, match=r"^<bytes>: the image is truncated \(image file is truncated"
    ):
        load_image(data[: len(data) // 2])


def test_png_with_broken_header_crc():
    data = bytearray(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    data[29] ^= 0xFF  # the IHDR CRC
    with pytest.raises(CorruptImageError, match="looks like PNG but its header is damaged"):
        load_image(bytes(data))


def test_png_with_corrupt_pixel_data():
    data = bytearray(encode(noisy_rgb((64, 64)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10 : idat + 40] = b"\xff" * 30
    with pytest.raises(CorruptImageError, match="cannot decode the image"):
        load_image(bytes(data))


# --------------------------------------------------------------------------- limits


def test_bomb_header_rejected_before_pixel_decode(monkeypatch):
    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    data = png_header_only(20000, 20000)
    assert len(data) < 100
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(data)


def test_pixel_cap_below_pillows_own(monkeypatch):
    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(png_header_only(8000, 8000), name="big.png")  # 64 MP: under Pillow's 89 MP
    assert str(info.value) == (
        "big.png: 8000x8000 pixels (64.0 MP) is over the 50 MP limit. "
        "Downscale it first, or raise ImageLimits.max_pixels."
    )
    with pytest.raises(ImageTooLargeError, match="100x100 pixels"):
        load_image(png_header_only(100, 100), ImageLimits(max_pixels=9999))


def test_pillow_bomb_warning_is_an_error_even_under_a_higher_cap(monkeypatch):
    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    # 100 MP is in Pillow's warning band (89-179 MP): it must not slip through as a mere warning.
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        load_image(png_header_only(10000, 10000), ImageLimits(max_pixels=150_000_000))


def test_bomb_warning_filter_does_not_leak():
    import warnings

    before = list(warnings.filters)
    with pytest.raises(ImageTooLargeError):
        load_image(png_header_only(20000, 20000))
    assert warnings.filters == before


def test_byte_cap_bytes_path_and_stream(tmp_path):
    data = encode(noisy_rgb((64, 64)), "PNG")
    limits = ImageLimits(max_bytes=len(data) - 1)
    with pytest.raises(ImageTooLargeError, match="larger than the"):
        load_image(data, limits)
    path = tmp_path / "a.png"
    path.write_bytes(data)
    with pytest.raises(ImageTooLargeError, match=r"^.*a\.png: .* is larger than the"):
        load_image(path, limits)
    assert load_image(path, ImageLimits(max_bytes=len(data))).size == (64, 64)

    class Endless(io.RawIOBase):
        served = 0

        def readable(self):
            return True

        def readinto(self, buf):
            buf[:] = b"\x00" * len(buf)
            self.served += len(buf)
            return len(buf)

    stream = Endless()
    with pytest.raises(ImageTooLargeError, match=r"^<stream>: larger than the 1000 bytes limit"):
        load_image(stream, ImageLimits(max_bytes=1000))
    assert stream.served == 1001  # never reads more than max_bytes + 1


def test_ten_thousand_frame_gif_decodes_frame_zero_only(monkeypatch):
    data = gif_frame_flood(10_000)
    assert Image.open(io.BytesIO(data)).n_frames == 10_000  # the fixture really has 10,000 frames

    def forbidden(self):
        raise AssertionError("n_frames/is_animated walks every frame")

    seen = []
    real_seek = GifImagePlugin.GifImageFile.seek

    def seek(self, frame):
        seen.append(frame)
        return real_seek(self, frame)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "n_frames", property(forbidden))
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "is_animated", property(forbidden))
    monkeypatch.setattr(GifImagePlugin.GifImageFile, "seek", seek)
    img = load_image(data)
    assert img.size == (1, 1) and img.getpixel((0, 0)) == RED
    assert all(frame == 0 for frame in seen)


def test_multipage_tiff_first_page():
    pages = [Image.new("RGB", (10, 10), RED), Image.new("RGB", (20, 20), BLUE)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = load_image(data)
    assert out.size == (10, 10) and out.getpixel((5, 5)) == RED


# --------------------------------------------------------------------------- orientation

# EXIF orientation: where the stored image's top-left and top-right pixels
# appear when displayed (from the TIFF/EXIF spec's 0th-row/0th-column table).
ORIENTATION_CORNERS = {
    1: ("TL", "TR"),
    2: ("TR", "TL"),
    3: ("BR", "BL"),
    4: ("BL", "BR"),
    5: ("TL", "BL"),
    6: ("TR", "BR"),
    7: ("BR", "TR"),
    8: ("BL", "TL"),
}


def corner(img: Image.Image, where: str) -> tuple[int, int, int]:
    w, h = img.size
    x = 10 if where[1] == "L" else w - 11
    y = 10 if where[0] == "T" else h - 11
    return img.getpixel((x, y))


def close(a, b, tol=40):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def oriented(orientation: int, fmt: str) -> bytes:
    stored = Image.new("RGB", (400, 300), GRAY)
    stored.paste(RED, (0, 0, 50, 50))  # stored top-left
    stored.paste(GREEN, (350, 0, 400, 50))  # stored top-right
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(stored, fmt, exif=exif.tobytes())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(orientation, fmt):
    out = load_image(oriented(orientation, fmt))
    assert out.size == ((300, 400) if orientation >= 5 else (400, 300))
    red_at, green_at = ORIENTATION_CORNERS[orientation]
    assert close(corner(out, red_at), RED)
    assert close(corner(out, green_at), GREEN)
    others = {"TL", "TR", "BL", "BR"} - {red_at, green_at}
    assert all(close(corner(out, c), GRAY) for c in others)


def test_orientation_of_a_pil_image_is_applied_without_mutating_it():
    src = Image.open(io.BytesIO(oriented(6, "PNG")))
    out = load_image(src)
    assert out.size == (300, 400) and close(corner(out, "TR"), RED)
    assert src.size == (400, 300) and src.mode == "RGB"


# --------------------------------------------------------------------------- modes


def roundtrip(im: Image.Image, fmt: str = "PNG", **kw) -> Image.Image:
    return load_image(encode(im, fmt, **kw))


def test_mode_1():
    im = Image.new("1", (4, 2), 0)
    im.putpixel((3, 1), 1)
    out = roundtrip(im)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((3, 1)) == WHITE


def test_mode_l():
    assert roundtrip(Image.new("L", (4, 4), 77)).getpixel((1, 1)) == (77, 77, 77)


def test_mode_la_composited_on_white():
    im = Image.new("LA", (3, 1))
    im.putdata([(0, 0), (0, 255), (0, 128)])
    out = roundtrip(im)
    assert [out.getpixel((x, 0)) for x in range(3)] == [WHITE, (0, 0, 0), (127, 127, 127)]


def test_mode_p_with_trns():
    im = Image.new("P", (2, 1))
    im.putpalette(list(RED) + list(BLUE) + [0] * 762)
    im.putdata([0, 1])
    data = encode(im, "PNG", transparency=0)
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    out = load_image(data)
    assert out.getpixel((0, 0)) == WHITE and out.getpixel((1, 0)) == BLUE


def test_mode_p_without_transparency():
    im = Image.new("P", (1, 1))
    im.putpalette(list(GREEN) + [0] * 765)
    assert roundtrip(im).getpixel((0, 0)) == GREEN


def test_mode_rgba():
    im = Image.new("RGBA", (3, 1))
    im.putdata([(255, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    out = roundtrip(im)
    assert [out.getpixel((x, 0)) for x in range(3)] == [WHITE, RED, (127, 127, 127)]


def test_mode_cmyk():
    out = roundtrip(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "TIFF")
    assert out.getpixel((0, 0)) == RED


def test_mode_i16_scaled_not_clipped():
    values = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    src = Image.fromarray(values)
    assert src.mode == "I;16"
    data = encode(src, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = load_image(data)
    # round(v / 257): 65535 -> 255; clipping would have made 1000 and 30000 white.
    assert [out.getpixel((x, 0))[0] for x in range(4)] == [0, 4, 117, 255]


def test_mode_i32():
    sixteen = Image.fromarray(np.array([[0, 257, 65535]], dtype=np.int32), "I")
    assert [load_image(sixteen).getpixel((x, 0))[0] for x in range(3)] == [0, 1, 255]
    eight = Image.fromarray(np.array([[0, 100, 200]], dtype=np.int32), "I")
    assert [roundtrip(eight, "TIFF").getpixel((x, 0))[0] for x in range(3)] == [0, 100, 200]
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32), "I")
    assert [load_image(signed).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_mode_f_scaled_by_range():
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    assert [roundtrip(unit, "TIFF").getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    wide = Image.fromarray(np.array([[-5.0, 0.0, 5.0]], dtype=np.float32), "F")
    assert [load_image(wide).getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]
    nan = Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32), "F")
    assert [load_image(nan).getpixel((x, 0))[0] for x in range(2)] == [0, 255]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("YCbCr", (76, 85, 255), (254, 0, 0)),
        ("HSV", (0, 255, 255), RED),
        ("LAB", (255, 128, 128), (254, 255, 254)),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
        ("PA", None, WHITE),
    ],
)
def test_other_modes(mode, value, expected):
    im = Image.new(mode, (2, 2)) if value is None else Image.new(mode, (2, 2), value)
    out = load_image(im)
    assert out.mode == "RGB" and out.getpixel((1, 1)) == expected


def test_result_carries_no_metadata():
    exif = Image.Exif()
    exif[0x010E] = "<script>alert(1)</script>"
    out = load_image(encode(Image.new("RGB", (4, 4)), "JPEG", exif=exif.tobytes()))
    assert out.info == {}


# --------------------------------------------------------------------------- inputs


def make_tree(root: Path) -> Path:
    photos = root / "photos"
    (photos / "sub" / "deeper").mkdir(parents=True)
    (photos / ".git").mkdir()
    (photos / "empty").mkdir()
    png = encode(Image.new("RGB", (4, 4), RED), "PNG")
    for rel in ["b.jpg", "a.png", "Z.JPEG", "sub/c.gif", "sub/deeper/d.webp", "a0/e.png"]:
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        (photos / rel).write_bytes(png)
    for rel in [".hidden.jpg", ".git/x.jpg", "notes.txt", "sub/readme.md"]:
        (photos / rel).write_bytes(png)
    return photos


def labels(items):
    return [(item.label, item.kind) for item in items]


def test_expand_directory_sorted_recursive(tmp_path):
    photos = make_tree(tmp_path)
    got = labels(expand_inputs([str(photos)]))
    expected = ["Z.JPEG", "a.png", "a0/e.png", "b.jpg", "sub/c.gif", "sub/deeper/d.webp"]
    assert got == [(f"{photos}/{rel}", "file") for rel in expected]
    flat = labels(expand_inputs([photos], recursive=False))
    assert flat == [(f"{photos}/{rel}", "file") for rel in ["Z.JPEG", "a.png", "b.jpg"]]


def test_expand_globs(tmp_path):
    photos = make_tree(tmp_path)
    assert labels(expand_inputs([f"{photos}/*.jpg"])) == [(f"{photos}/b.jpg", "file")]
    deep = labels(expand_inputs([f"{photos}/**/*.gif", f"{photos}/sub/*"]))
    assert deep == [
        (f"{photos}/sub/c.gif", "file"),
        (f"{photos}/sub/c.gif", "file"),
        (f"{photos}/sub/deeper/d.webp", "file"),
    ]


def test_expand_keeps_input_order_and_reports_missing(tmp_path):
    photos = make_tree(tmp_path)
    png = encode(Image.new("RGB", (4, 4), RED), "PNG")
    pil = Image.new("RGB", (2, 2))
    items = list(
        expand_inputs(
            [
                "https://example.com/cat.jpg",
                str(tmp_path / "nope.jpg"),
                f"{photos}/sub/deeper",
                png,
                "-",
                pil,
                str(photos / "empty"),
                f"{tmp_path}/*.nothing",
                "ftp://example.com/x.png",
            ]
        )
    )
    assert labels(items) == [
        ("https://example.com/cat.jpg", "url"),
        (f"{tmp_path}/nope.jpg", "error"),
        (f"{photos}/sub/deeper/d.webp", "file"),
        ("<bytes #3>", "bytes"),
        ("-", "stdin"),
        ("<image #5>", "image"),
        (f"{photos}/empty", "error"),
        (f"{tmp_path}/*.nothing", "error"),
        ("ftp://example.com/x.png", "url"),
    ]
    with pytest.raises(
        InputError, match=r"nope\.jpg: no such file or directory\. Check the path\."
    ):
        load_input(items[1])
    with pytest.raises(InputError, match="no image files in this folder"):
        load_input(items[6])
    with pytest.raises(InputError, match="no image files match this pattern"):
        load_input(items[7])
    assert load_input(items[2]).getpixel((0, 0)) == RED
    assert load_input(items[3]).getpixel((0, 0)) == RED
    assert load_input(items[5]).size == (2, 2)


def test_explicit_file_is_kept_whatever_its_extension(tmp_path):
    path = tmp_path / "scan.dat"
    path.write_bytes(encode(Image.new("RGB", (3, 3), BLUE), "PNG"))
    [item] = expand_inputs([path])
    assert item == ImageInput(str(path), "file", path)
    assert load_input(item).getpixel((0, 0)) == BLUE


def test_single_string_is_one_input(tmp_path):
    make_tree(tmp_path)
    assert len(list(expand_inputs(str(tmp_path / "photos" / "b.jpg")))) == 1


def test_stdin(monkeypatch):
    data = encode(Image.new("RGB", (5, 5), GREEN), "PNG")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    [item] = expand_inputs(["-"])
    assert load_input(item).getpixel((2, 2)) == GREEN


def test_url_items_use_the_fetcher():
    data = encode(Image.new("RGB", (5, 5), BLUE), "PNG")
    calls = []

    def fetcher(url):
        calls.append(url)
        return data

    [item] = expand_inputs(["https://example.com/a.png"])
    assert load_input(item, fetcher=fetcher).getpixel((0, 0)) == BLUE
    assert calls == ["https://example.com/a.png"]


def test_unreadable_and_directory_paths(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_wrong_input_type_is_a_programming_error():
    with pytest.raises(TypeError, match="input #0 is a int"):
        list(expand_inputs([42]))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_mutated_files_fail_cleanly(fmt):
    """A small deterministic fuzz run: flipped bytes and cut files either decode or raise InputError."""
    rng = np.random.default_rng(7)
    base = encode(noisy_rgb((24, 16), seed=1), fmt)
    outcomes = {"decoded": 0, "refused": 0}
    for trial in range(80):
        data = bytearray(base)
        if trial % 4 == 0:
            data = data[: rng.integers(1, len(data))]
        else:
            for pos in rng.integers(0, len(data), rng.integers(1, 8)):
                data[pos] = rng.integers(0, 256)
        try:
            out = load_image(bytes(data), ImageLimits(max_pixels=1_000_000))
        except InputError:
            outcomes["refused"] += 1
        else:
            assert out.mode == "RGB"
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 0  # the mutations did reach the error paths


def test_decode_ahead_keeps_input_order_and_bounds_the_window():
    """Later items finish first, yet come out in input order; no more than the window is in flight."""
    lock = threading.Lock()
    started: list[int] = []
    consumed: list[int] = []

    def prepare(i: int) -> int:
        with lock:
            started.append(i)
            # Never more than `window` items decoded ahead of the consumer.
            assert len(started) - len(consumed) <= 3
        time.sleep(0.02 * (5 - i % 5))  # later items in each group of 5 finish sooner
        return i * 10

    out = []
    for value in decode_ahead(prepare, range(12), workers=4, window=3, name="test-decode"):
        out.append(value)
        with lock:
            consumed.append(value)
    assert out == [i * 10 for i in range(12)]
    assert sorted(started) == list(range(12))
