"""Decode and preprocess images with OpenCV.

The format is recognised from the bytes (never a file name); the size is read from the header
and checked against the pixel cap before any pixel buffer is allocated; EXIF orientation is
applied; grey, alpha, palette, CMYK and 16-bit images all become 8-bit RGB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from imgdedup.runtime.spec import ResizePolicy

# We enforce our own pixel cap before decoding; Pillow is only used to read headers.
Image.MAX_IMAGE_PIXELS = None
# Decoding runs on a pool of threads next to onnxruntime's; OpenCV's own threads would only
# oversubscribe the cores.
cv2.setNumThreads(1)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF")
# File names the command-line tools take for images when they walk a folder (the server itself
# never reads a name: the format comes from the bytes).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif"})
MIN_SIDE = 16


class ImageError(ValueError):
    """An image the service cannot use. `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, upright
    format: str
    width: int  # of the full-resolution image, after EXIF orientation
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def cropped(self, box: tuple[int, int, int, int] | None) -> DecodedImage | None:
        """The region (x0, y0, x1, y1) of this image as an image of its own (None: None)."""
        if box is None:
            return None
        x0, y0, x1, y1 = box
        return DecodedImage(rgb=np.ascontiguousarray(self.rgb[y0:y1, x0:x1]), format=self.format, width=x1 - x0, height=y1 - y0)


def sniff_format(data: bytes) -> str | None:
    """The container format from magic bytes, or a descriptive name for known non-images."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1", b"heim", b"heis"):
            return "HEIC"
        return "ISO-BMFF video or image"
    if head.startswith(b"%PDF"):
        return "PDF"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<svg")):
        return "HTML/XML/SVG text"
    return None


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What the header says: enough to refuse an image, or to describe an exact duplicate."""

    format: str
    width: int  # after EXIF orientation
    height: int
    has_alpha: bool
    orientation: int
    # A JPEG's mean luminance quantisation step (libjpeg's tables: ~12 at quality 90, 58 at
    # 50, 142 at 20, 196 at 10); 0 for other formats. How coarse its 8x8 blocks are.
    jpeg_quantization: float = 0.0

    @property
    def pixels(self) -> int:
        return self.width * self.height


def probe_image(data: bytes, *, max_pixels: int) -> ImageFacts:
    """Recognise and vet an encoded image from its header alone; nothing is decoded."""
    if not data:
        raise ImageError("EMPTY_IMAGE", "the image is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError("UNKNOWN_FORMAT", f"not a recognised image format (first bytes {data[:8].hex()}); supported: {', '.join(SUPPORTED_FORMATS)}")
    if fmt not in SUPPORTED_FORMATS:
        raise ImageError("UNSUPPORTED_FORMAT", f"{fmt} is not supported; supported: {', '.join(SUPPORTED_FORMATS)}")

    width, height, has_alpha, orientation, quantization = _probe_header(data, fmt, max_pixels)
    if min(width, height) < MIN_SIDE:
        raise ImageError("IMAGE_TOO_SMALL", f"image is {width}x{height}; each side must be at least {MIN_SIDE} px")
    if fmt == "JPEG" and not _jpeg_has_end(data):
        raise ImageError("TRUNCATED_IMAGE", "the JPEG data is truncated (no end-of-image marker)")
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
        width, height = height, width
    return ImageFacts(fmt, width, height, has_alpha, orientation, quantization)


def decode_image(data: bytes, *, max_pixels: int, target_size: int = 0, facts: ImageFacts | None = None) -> DecodedImage:
    """Decode an encoded image into upright 8-bit RGB.

    `target_size` lets JPEG decoding use DCT scaling (decode at 1/2, 1/4 or 1/8) when the
    model input is that much smaller than the photo: same result after resizing, less work.
    """
    facts = facts or probe_image(data, max_pixels=max_pixels)
    fmt = facts.format
    buf = np.frombuffer(data, dtype=np.uint8)
    rgb = None
    if not facts.has_alpha:
        flags = cv2.IMREAD_COLOR
        if fmt == "JPEG" and target_size:
            flags = _reduced_flag(min(facts.width, facts.height), target_size)
        # The codec writes RGB itself, saving a BGR->RGB pass over the full-size image
        # (0.02-0.05 ms of the ~1 ms a 500x375 JPEG takes).
        rgb = cv2.imdecode(buf, (flags & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB)
    if rgb is None:
        # Alpha to composite, or a GIF/TIFF variant OpenCV's codecs refuse (these give BGR).
        bgr = _decode_with_alpha(buf) if facts.has_alpha else None
        if bgr is None:
            bgr = _decode_with_pillow(data)
        if bgr is not None:
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb is None:
        raise ImageError("CORRUPT_IMAGE", f"the {fmt} data could not be decoded (corrupt or truncated)")
    return DecodedImage(rgb=rgb, format=fmt, width=facts.width, height=facts.height)


def preprocess(image: DecodedImage, resize: ResizePolicy) -> np.ndarray:
    """Resize as the model's spec says; returns (H, W, 3) uint8 RGB, C-contiguous."""
    h, w = image.rgb.shape[:2]
    if resize.mode == "square":
        out_w = out_h = resize.size
    else:
        scale = resize.size / min(h, w)
        out_w, out_h = max(1, round(w * scale)), max(1, round(h * scale))
    shrinking = out_w * out_h < w * h
    halving = w >= 2 * out_w or h >= 2 * out_h
    interp = {
        "area": cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
        "auto": cv2.INTER_AREA if halving else cv2.INTER_LINEAR,
        "linear": cv2.INTER_LINEAR,
        "cubic": cv2.INTER_CUBIC,
    }[resize.interpolation]
    if (out_w, out_h) == (w, h):
        return np.ascontiguousarray(image.rgb)
    return cv2.resize(image.rgb, (out_w, out_h), interpolation=interp)


def _probe_header(data: bytes, fmt: str, max_pixels: int) -> tuple[int, int, bool, int, float]:
    """(width, height, has_alpha, exif_orientation, jpeg_quantization) from the header alone;
    nothing decoded. The pixel limit is checked as soon as the size is known, before anything
    else is read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageError("TOO_MANY_PIXELS", f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
                has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                    im.mode == "P" and "transparency" in im.info
                )
                orientation = _orientation(im, fmt)
                quantization = _luminance_quantization(im) if fmt == "JPEG" else 0.0
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError("CORRUPT_IMAGE", f"the {fmt} header could not be read: {exc}") from None
    if width <= 0 or height <= 0:
        raise ImageError("CORRUPT_IMAGE", f"the {fmt} header gives an empty size {width}x{height}")
    return width, height, has_alpha, orientation, quantization


def _luminance_quantization(im: Image.Image) -> float:
    """The mean step of the quantisation table of a JPEG's first component (luminance, or grey),
    which Pillow reads with the header; 0 when there is none. A hint, never a reason to refuse
    an image: anything unexpected gives 0."""
    try:
        tables = im.quantization or {}
        layers = getattr(im, "layer", None) or []  # (component id, h, v, table id) per component
        table = tables.get(layers[0][3]) if layers else None
        table = table or tables.get(0) or next(iter(tables.values()), None)
        return float(sum(table)) / len(table) if table else 0.0
    except Exception:
        return 0.0


def _orientation(im: Image.Image, fmt: str) -> int:
    """The EXIF orientation tag (1: upright). A PNG's is read only from an eXIf chunk before its
    pixel data (where the PNG spec puts it): Pillow's PngImageFile.getexif() decodes the whole
    image to look after the pixels, which for a header that claims 100,000 x 100,000 pixels
    allocated ~10 GB before the data ran out (a test server was killed for memory in CI)."""
    if fmt not in ("JPEG", "TIFF", "WEBP", "PNG", "AVIF"):
        return 1
    try:
        if fmt == "PNG":
            exif = Image.Exif()
            if raw := im.info.get("exif"):
                exif.load(raw)
        else:
            exif = im.getexif()
        return int(exif.get(0x0112, 1) or 1)
    except Exception:
        return 1


def _jpeg_has_end(data: bytes) -> bool:
    # Entropy-coded data byte-stuffs 0xFF, so FF D9 near the end is the real end marker;
    # some writers append a little padding or trailer after it.
    return b"\xff\xd9" in data[-4096:]


def _reduced_flag(short_side: int, target: int) -> int:
    for factor, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if short_side // factor >= target:
            return flag
    return cv2.IMREAD_COLOR


def _decode_with_alpha(buf: np.ndarray) -> np.ndarray | None:
    """Decode keeping alpha, composite onto white (what a viewer shows), return 8-bit BGR."""
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 2:  # grey + alpha
        grey, alpha = img[..., 0], img[..., 1]
        img = cv2.merge([grey, grey, grey, alpha])
    if img.shape[2] == 4:
        alpha = img[..., 3:4].astype(np.float32) / 255.0
        bgr = img[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(bgr + 0.5, 0, 255).astype(np.uint8)
    return img[..., :3]


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.seek(0)
                from PIL import ImageOps

                rgb = ImageOps.exif_transpose(im.convert("RGBA" if im.mode in ("RGBA", "LA", "PA", "P") else "RGB"))
                if rgb.mode == "RGBA":
                    background = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
                    rgb = Image.alpha_composite(background, rgb)
                arr = np.asarray(rgb.convert("RGB"))
    except Exception:
        return None
    return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)


def image_files(root: Path) -> list[Path]:
    """The image files under `root`, recursively, in name order (by IMAGE_SUFFIXES)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
