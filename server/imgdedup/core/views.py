"""Extra views of an image, embedded and matched besides the whole image.

The one view today: the main content of an image that sits on a plain background: the photo
inside a screenshot (window chrome, captions and white space around it), a padded or framed
photo, a product shot on white. A CNN descriptor of the whole canvas is dominated by the canvas:
with SSCD, screenshot copies (our benchmarks/make_edits.py) had a median similarity of 0.61 to
their photo and 39 % fell below the threshold, and screenshots of *different* photos in similar
chrome matched each other (all 6 false pairs on that set). Embedding the content region as well,
matching on the best pair of views, and comparing two images that both have a content view by
their content only (core/index.py: image_similarity) found every screenshot and padded copy and
left no false pair (offline, 5,250 images).

The detector is cheap (on a <= 256 px thumbnail, ~0.3 ms) and conservative: the image border
must be mostly one colour, and one connected region that differs from it must fill its bounding
box and cover 4-50 % of the image. It fired on 2.3 % of the dev benchmark's photos and copies
(an extra embedding each: that is the throughput cost) and on nearly every screenshot or padded
copy. A view found on one copy and not on another costs no match: whole images still compare.
"""

from __future__ import annotations

import cv2
import numpy as np

from imgdedup.core.images import DecodedImage

THUMB_SIDE = 256
# A pixel differs from the background by more than this in some channel (0-255).
BACKGROUND_TOLERANCE = 24
# Share of the border ring (2 px) within the tolerance of its median colour.
MIN_UNIFORM_BORDER = 0.5
# The content's bounding box, as a share of the image area.
MIN_CONTENT_SHARE, MAX_CONTENT_SHARE = 0.04, 0.5
# The content region must fill at least this much of its bounding box (a photo, not scattered
# text or line art).
MIN_FILL = 0.5


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the main content on a plain background, or None."""
    h, w = rgb.shape[:2]
    scale = min(1.0, THUMB_SIDE / max(h, w))
    if min(h, w) * scale < 8:
        return None
    # The border test first, on the full image sampled at thumbnail spacing: most photos stop
    # here, before any thumbnail is made.
    step = max(1, round(1 / scale))
    k = 2 * step
    ring = np.concatenate([
        rgb[:k:step, ::step].reshape(-1, 3), rgb[-k::step, ::step].reshape(-1, 3),
        rgb[::step, :k:step].reshape(-1, 3), rgb[::step, -k::step].reshape(-1, 3),
    ])
    background = np.median(ring, axis=0).astype(np.uint8)
    if (_distance(ring[None], background) <= BACKGROUND_TOLERANCE).mean() < MIN_UNIFORM_BORDER:
        return None  # no plain background: an ordinary photo
    thumb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    th, tw = thumb.shape[:2]
    mask = (_distance(thumb, background) > BACKGROUND_TOLERANCE).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[largest])
    if not (MIN_CONTENT_SHARE <= (bw * bh) / (tw * th) <= MAX_CONTENT_SHARE) or area < MIN_FILL * bw * bh:
        return None
    return (
        int(x / scale), int(y / scale),
        min(w, int(np.ceil((x + bw) / scale))), min(h, int(np.ceil((y + bh) / scale))),
    )


def _distance(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Per pixel of an (H, W, 3) uint8 array: the largest channel difference to `colour`."""
    diff = cv2.absdiff(np.ascontiguousarray(pixels), np.full(pixels.shape, colour, np.uint8))
    return np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])


def content_view(image: DecodedImage) -> DecodedImage | None:
    """The image cropped to its main content (see content_box), or None."""
    box = content_box(image.rgb)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    crop = np.ascontiguousarray(image.rgb[y0:y1, x0:x1])
    return DecodedImage(rgb=crop, format=image.format, width=x1 - x0, height=y1 - y0)
