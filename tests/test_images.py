"""Decoding and preprocessing with OpenCV, without a server."""

from __future__ import annotations

import io
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgdedup.core.images import ImageError, decode_image, preprocess, probe_image, sniff_format
from imgdedup.runtime.spec import ResizePolicy

pytestmark = pytest.mark.store_neutral  # decoding, in this process: run in the Lite pass, not again on the Milvus server


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _two_tone(w: int = 80, h: int = 40) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = (255, 0, 0)  # left half red
    return a


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    im = Image.fromarray(_two_tone())
    exif = im.getexif()
    exif[0x0112] = 6  # stored pixels must be rotated 90 degrees clockwise to be upright
    out = decode_image(_save(im, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {})), max_pixels=10**8)
    assert (out.width, out.height) == (40, 80) and out.rgb.shape == (80, 40, 3)
    assert out.rgb[5, 20, 0] > 200 and out.rgb[75, 20, 0] < 50  # red on top after rotation


def test_headers_claiming_too_many_pixels_are_refused_without_allocating_them():
    # PNG headers of 30,000 and 100,000 pixels square with almost no data. Reading their EXIF with
    # Pillow's PNG getexif() decoded them: the second took ~30 s and ~10 GB (a test server was
    # killed for memory in CI). The size is checked first now; this process's peak memory tells.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    for side in (30_000, 100_000):
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        blob = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
        with pytest.raises(ImageError) as err:
            probe_image(blob, max_pixels=60_000_000)
        assert err.value.reason == "TOO_MANY_PIXELS"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def test_alpha_is_composited_on_white():
    a = np.zeros((32, 32, 4), np.uint8)  # fully transparent black
    out = decode_image(_save(Image.fromarray(a), "PNG"), max_pixels=10**8)
    assert out.rgb.min() == 255


def test_sixteen_bit_and_grey_become_8_bit_rgb():
    grey16 = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    out = decode_image(_save(Image.fromarray(grey16), "PNG"), max_pixels=10**8)
    assert out.rgb.dtype == np.uint8 and out.rgb.shape == (64, 64, 3)
    assert out.rgb[-1, -1, 0] == 255 and out.rgb[0, 0, 0] == 0


def test_format_comes_from_bytes_not_names():
    png = _save(Image.fromarray(_two_tone()), "PNG")
    assert sniff_format(png) == "PNG"
    assert decode_image(png, max_pixels=10**8).format == "PNG"
    assert sniff_format(b"%PDF-1.4") == "PDF"
    assert sniff_format(b"hello world") is None


def test_pixel_cap_is_checked_before_decoding():
    png = _save(Image.fromarray(np.zeros((100, 100, 3), np.uint8)), "PNG")
    with pytest.raises(ImageError) as err:
        decode_image(png, max_pixels=9999)
    assert err.value.reason == "TOO_MANY_PIXELS"


@pytest.mark.parametrize("mode, size, expected", [("square", 288, (288, 288, 3)), ("short_side", 100, (100, 200, 3))])
def test_resize_policies(mode, size, expected):
    out = decode_image(_save(Image.fromarray(np.zeros((400, 800, 3), np.uint8)), "PNG"), max_pixels=10**8)
    assert preprocess(out, ResizePolicy(mode=mode, size=size)).shape == expected


def test_dct_scaled_jpeg_decoding_keeps_full_size_facts():
    big = np.random.default_rng(0).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)
    out = decode_image(_save(Image.fromarray(big), "JPEG"), max_pixels=10**8, target_size=288)
    assert (out.width, out.height) == (1600, 1200)  # reported at full resolution
    assert min(out.rgb.shape[:2]) >= 288  # decoded smaller, never below the model input


@pytest.mark.parametrize("quality, low, high", [(95, 0, 8), (50, 50, 65), (20, 135, 150), (5, 220, 240)])
def test_the_header_gives_a_jpegs_quantisation(quality, low, high):
    # libjpeg's tables, scaled by the quality: the mean luminance step (58 at quality 50).
    data = _save(Image.fromarray(_two_tone()), "JPEG", quality=quality)
    assert low <= probe_image(data, max_pixels=10**6).jpeg_quantization <= high


def test_other_formats_have_no_quantisation():
    assert probe_image(_save(Image.fromarray(_two_tone()), "PNG"), max_pixels=10**6).jpeg_quantization == 0.0
