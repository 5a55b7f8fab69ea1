"""Bad input gets the right status with details, and nothing stored is touched."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image

from conftest import check, encode, rgb
from imgdedup._proto.dedup.v1 import dedup_pb2 as pb


def png_header_only(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims width x height (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _pil(img: np.ndarray | Image.Image, fmt: str, **kw) -> bytes:
    im = Image.fromarray(img) if isinstance(img, np.ndarray) else img
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


JPEG = encode(rgb("coffee"))
PNG = encode(rgb("coffee"), ".png")

BAD_IMAGES = {
    "empty": (b"", "EMPTY_IMAGE"),
    "random bytes": (np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "UNKNOWN_FORMAT"),
    "truncated JPEG": (JPEG[: len(JPEG) // 2], "TRUNCATED_IMAGE"),
    "truncated PNG": (PNG[: len(PNG) // 2], "CORRUPT_IMAGE"),
    "JPEG header then garbage": (JPEG[:200] + b"\x00" * 2000, "TRUNCATED_IMAGE"),
    "PDF": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n", "UNSUPPORTED_FORMAT"),
    "HTML": (b"<!DOCTYPE html><html><body><img src='x.jpg'></body></html>", "UNSUPPORTED_FORMAT"),
    "HEIC": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 100, "UNSUPPORTED_FORMAT"),
    "1x1 image": (_pil(np.zeros((1, 1, 3), np.uint8), "PNG"), "IMAGE_TOO_SMALL"),
    "30000x30000 bomb": (png_header_only(30000, 30000), "TOO_MANY_PIXELS"),
    "billions of pixels": (png_header_only(100000, 100000), "TOO_MANY_PIXELS"),
}


def _bad_request(err: grpc.RpcError) -> error_details_pb2.BadRequest:
    status = rpc_status.from_call(err)
    assert status is not None, "error details missing"
    detail = error_details_pb2.BadRequest()
    assert any(d.Unpack(detail) for d in status.details)
    return detail


@pytest.mark.store_neutral  # refused before the store (which test_bad_input_leaves_stored_data_intact checks)
@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_invalid_argument_with_reason(stub, name):
    blob, reason = BAD_IMAGES[name]
    with pytest.raises(grpc.RpcError) as err:
        check(stub, blob, image_id=f"bad-{name}", add=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    violation = _bad_request(err.value).field_violations[0]
    assert violation.field == "image" and violation.reason == reason, violation


def test_bad_input_leaves_stored_data_intact(stub):
    good = check(stub, JPEG, image_id="keeper", add=True)
    before = stub.GetInfo(pb.GetInfoRequest()).indexed_images
    for blob, _ in BAD_IMAGES.values():
        with pytest.raises(grpc.RpcError):
            check(stub, blob, image_id="keeper", add=True)  # same id: must not replace the good one
    assert stub.GetInfo(pb.GetInfoRequest()).indexed_images == before
    again = check(stub, JPEG)
    assert again.matches[0].image_id == "keeper" and again.matches[0].cluster_id == good.cluster_id


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.2}, "threshold"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 10_000}, "top_k"),
        ({"image_id": "x" * 300}, "image_id"),
        ({"image_id": "tab\there"}, "image_id"),
    ],
)
def test_out_of_range_fields(stub, kwargs, field):
    with pytest.raises(grpc.RpcError) as err:
        stub.CheckDuplicate(pb.CheckDuplicateRequest(image=JPEG, **kwargs))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(err.value).field_violations[0].field == field


def test_odd_but_valid_images_are_accepted(stub):
    a = rgb("astronaut")
    rgba = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    frames = [Image.fromarray(a), Image.fromarray(a[::-1].copy())]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    cases = {
        "png with alpha": _pil(rgba, "PNG"),
        "16-bit grey png": _pil(Image.fromarray((a[..., 0].astype(np.uint16) * 257)), "PNG"),
        "cmyk jpeg": _pil(Image.fromarray(a).convert("CMYK"), "JPEG"),
        "animated gif": gif.getvalue(),
        "tiff": _pil(a, "TIFF"),
        "bmp": _pil(a, "BMP"),
        "webp": _pil(a, "WEBP"),
        "grey jpeg": _pil(Image.fromarray(a).convert("L"), "JPEG"),
        "exif-rotated jpeg": _exif_rotated(a),
    }
    check(stub, encode(a), image_id="astro-original", add=True)
    for name, blob in cases.items():
        r = check(stub, blob)
        assert r.is_duplicate and r.matches[0].image_id == "astro-original", name


def _exif_rotated(a: np.ndarray) -> bytes:
    """Pixels stored turned 90 degrees, with EXIF orientation 6 saying how to turn them upright."""
    im = Image.fromarray(np.ascontiguousarray(np.rot90(a, 1)))  # counter-clockwise
    exif = im.getexif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    return _pil(im, "JPEG", exif=exif, quality=92)


def test_exif_rotated_photo_is_seen_upright(stub):
    a = rgb("coffee")  # 600x400
    check(stub, encode(a), image_id="coffee-upright", add=True)
    r = check(stub, _exif_rotated(a))
    assert (r.width, r.height) == (600, 400)
    # (test_bad_input... stored the same bytes as "keeper": the two tie, in either order)
    assert {m.image_id: m.similarity for m in r.matches}.get("coffee-upright", 0.0) > 0.95


def test_message_over_the_size_limit_is_resource_exhausted(stub):
    with pytest.raises(grpc.RpcError) as err:
        check(stub, b"\xff\xd8\xff" + b"\x00" * (65 * 1024 * 1024))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_delete_validates_ids(stub):
    resp = stub.DeleteImages(pb.DeleteImagesRequest(image_ids=["never-stored"]))
    assert list(resp.not_found_ids) == ["never-stored"] and not resp.deleted_ids
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteImages(pb.DeleteImagesRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
