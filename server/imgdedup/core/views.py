"""Extra views of an image, embedded and matched besides the whole image.

The one view today: the main content of an image that sits on a plain background: the photo
inside a screenshot (window chrome, captions and white space around it), a padded or framed
photo. A CNN descriptor of the whole canvas is dominated by the canvas: with SSCD, screenshot
copies (our benchmarks/make_edits.py) had a median similarity of 0.61 to their photo and 39 %
fell below the threshold, and screenshots of *different* photos in similar chrome matched each
other (all 6 false pairs on that set). Embedding the content region as well, matching on the
best pair of views, and comparing two images that both have a content view by their content only
(core/index.py: image_similarity) found every screenshot and padded copy and left no false pair
(offline, 5,250 images).

The detector is cheap (on a <= 256 px thumbnail; 0.19 ms per photo on average) and
conservative: the image border must be mostly one colour, and one connected region that differs
from it must fill at least 75 % of its bounding box (a pasted photo is a filled rectangle; an
object on a plain background rarely is) and cover 4-50 % of the image. It fires on 0.7 % of the
dev benchmark's original photos (11 of 1,496; each costs an extra embedding) and on 205 of the
500 screenshot and padded copies of our own edits (the others match as whole images). A view
found on one copy and not on another costs no match: whole images still compare.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from imgdedup.core.images import DecodedImage, ImageFacts
from imgdedup.core.insets import inset_view

THUMB_SIDE = 256
# A pixel differs from the background by more than this in some channel (0-255).
BACKGROUND_TOLERANCE = 24
# Share of the border ring (2 px) within the tolerance of its median colour.
MIN_UNIFORM_BORDER = 0.5
# The content's bounding box, as a share of the image area.
MIN_CONTENT_SHARE, MAX_CONTENT_SHARE = 0.04, 0.5
# The content region must fill at least this much of its bounding box: a pasted photo, not an
# object, scattered text or line art. At 0.5 it fired on 44 of the dev set's 1,496 photos (mostly
# products on white, an extra embedding each and no match gained: quality through the API was
# the same at 0.75) and on 208 of 500 screenshots and padded copies; at 0.75 on 11 and 205.
MIN_FILL = 0.75


def content_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the main content on a plain background, or None."""
    h, w = rgb.shape[:2]
    # An integer shrink factor: OpenCV's area averaging has a fast path for whole factors
    # (0.05 ms instead of 0.5 for a 481x321 photo).
    factor = -(-max(h, w) // THUMB_SIDE)
    if min(h, w) // factor < 8:
        return None
    # The border test first, on the full image sampled at thumbnail spacing: most photos stop
    # here, before any thumbnail is made.
    k = 2 * factor
    ring = np.concatenate([
        rgb[:k:factor, ::factor].reshape(-1, 3), rgb[-k::factor, ::factor].reshape(-1, 3),
        rgb[::factor, :k:factor].reshape(-1, 3), rgb[::factor, -k::factor].reshape(-1, 3),
    ])
    low, high = _background_range(np.median(ring, axis=0))
    if cv2.countNonZero(cv2.inRange(ring[None], low, high)) < MIN_UNIFORM_BORDER * len(ring):
        return None  # no plain background: an ordinary photo
    th, tw = h // factor, w // factor
    cropped = np.ascontiguousarray(rgb[: th * factor, : tw * factor])  # whole factor: drop < factor px
    thumb = cv2.resize(cropped, (tw, th), interpolation=cv2.INTER_AREA) if factor > 1 else cropped
    mask = cv2.bitwise_not(cv2.inRange(thumb, low, high))  # 255 where a pixel is not background
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh, area = (int(v) for v in stats[largest])
    if not (MIN_CONTENT_SHARE <= (bw * bh) / (tw * th) <= MAX_CONTENT_SHARE) or area < MIN_FILL * bw * bh:
        return None
    return x * factor, y * factor, min(w, (x + bw) * factor), min(h, (y + bh) * factor)


def _background_range(colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the values within BACKGROUND_TOLERANCE of the background colour."""
    c = colour.astype(np.int32)
    return np.clip(c - BACKGROUND_TOLERANCE, 0, 255).astype(np.uint8), np.clip(c + BACKGROUND_TOLERANCE, 0, 255).astype(np.uint8)


def content_view(image: DecodedImage) -> DecodedImage | None:
    """The image cropped to its main content (see content_box), or None."""
    return image.cropped(content_box(image.rgb))


class ExtraView(NamedTuple):
    image: DecodedImage
    inset: bool  # an inset view (core/insets.py), not a content view: matched apart (core/index.py: INSET_PAIR_MIN)


def extra_view(image: DecodedImage, facts: ImageFacts, *, content: bool = True, insets: bool = True) -> ExtraView | None:
    """The one extra view an image gets, if any: its content on a plain background (`content`),
    else the picture pasted into it (`insets`, core/insets.py; never in a JPEG so coarse that its
    8x8 blocks look like a pasted picture's edges: ImageFacts.jpeg_quantization)."""
    view = content_view(image) if content else None
    if view is not None:
        return ExtraView(view, inset=False)
    view = inset_view(image, jpeg_quantization=facts.jpeg_quantization) if insets else None
    return ExtraView(view, inset=True) if view is not None else None
