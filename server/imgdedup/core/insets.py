"""Inset views: a photo pasted onto another picture, found so that it can be embedded alone.

A photo pasted small onto another photo (DISC21's overlay copies, our benchmarks/make_hard.py
"paste" family: 30-50 % of the background's height) is invisible to a whole-image descriptor:
the composite scores ~0.9 with the background photo and under 0.5 with the pasted one, so 199
of 200 such copies were not found. Embedding the pasted region alone finds it (offline,
2026-12-04: the true region's crop scores >= 0.5 with its photo for 200 of 200, median 0.91).

The detector looks for the pasted photo's border: a rectangle whose sides (at least three; a
side on the image's border needs no edge) are straight lines of step edges between neighbouring
pixels. Natural photos are full of edges (texture, windows, frames), so a side counts only by
its *contrast*: the share of its length on an edge minus the larger such share on the lines
GAP pixels inside and outside it. A pasted border is an edge along its whole length with the
textures of two different photos on either side; a textured region has edges everywhere, on
the side and beside it alike. The box whose weakest side scores highest wins, if that reaches
MIN_CONTRAST.

Which lines are tried as sides matters most: a pasted border in a textured photo (leopard fur,
foliage, gravel) is an edge along its whole length, but so are dozens of texture lines, and the
lines with the most edges alone left it out. So the candidates are those lines and, as many
again, the lines whose edge run stands out most from the lines beside them (by the contrast
above).

Photos hold real rectangles too (windows, frames, screens, book spines), with sides as straight
and strong as a pasted border. What they lack is colours of their own: a window is lit and
coloured like the wall around it, while a pasted photo brings another photo's. So the winning
box must also differ from a ring around it (15 % of its shorter side wide) by MIN_FOREIGN in
the Bhattacharyya distance of their hue-saturation histograms (on the thumbnail: ~0.2 ms per
box tested). The detector in all: ~1.2 ms per photo, against 1.6 before its boxes were scored
only where all four sides hold and its sides' contrasts came from one gather (the same boxes;
5,744 images: the dev photos, the hard set and grey copies, interleaved, 2026-12-06).

Measured offline (2026-12-06, 2-core AMD EPYC VM) at these settings: the pasted photo found
(IoU > 0.5 with the truth) in 150 of the hard set's 200 composites (75 %), fired on 14.2 % of
the dev set's 1,496 photos (each costs one more embedding; 13.7 % before grey images were judged
by their brightness: 8 of them are grey). Without the colour test every
setting tried traded along one curve, about one composite more found for each 1 % more photos
fired on (found / fired): side contrast 0.40, 144 / 15.6 % (until 2026-12-06's afternoon; 127 /
8.0 % with the most-edges candidates alone), 4 stand-out candidates 134 / 9.5 %, 8: 135 / 11.4
%, 24 + 24: 145 / 17.6 %, 16 + 32: 147 / 18.5 %, 32 + 32: 147 / 18.8 % at 3-4x the time; 0.38:
147 / 20.3 %; 0.37: 150 / 22.9 %; 0.36: 152 / 25.9 %. The colour test moves the curve: at 0.40,
144 / 10.0 %; at 0.37 with MIN_FOREIGN 0.30 / 0.35 / 0.40 / 0.45, 150 / 16.3 %, 150 / 13.8 %,
145 / 10.3 %, 143 / 7.1 %; at 0.35, 153 / 21.3 %, 152 / 17.5 %, 149 / 13.2 %, 145 / 9.0 %; at
0.30, 157 / 38.8 %, 156 / 29.4 %; the next boxes tried when the best one fails the test found
0-4 more for 1-4 % more fired. The composites' distances: median 0.67 (10th percentile 0.49),
the dev photos' fires 0.37 (0.22). Earlier settings (2026-12-05): a stricter contrast 0.42 /
0.03, a 192-px thumbnail 0.58 / 0.11. The server runs it only on images without a content view
(core/views.py), so an image has one extra view at most. Through the API: docs/matching.md,
"Composites".
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from imgdedup.core.images import DecodedImage

THUMB_SIDE = 256
EDGE = 20  # a step between neighbouring thumbnail pixels, in some channel (0-255)
CANDIDATES = 16  # lines per direction tried as sides: those with the longest edge runs,
CONTRAST_CANDIDATES = 16  # and those whose runs stand out most from the lines beside them
GAP = 3  # the lines a side is compared with, this many pixels inside and outside it
CONTRAST_WEIGHT = 0.75  # in quarters (_candidates counts in integers)
MIN_CONTRAST = 0.37
# The box: each side 20-90 % of the image's, its area 4-60 % of the image's.
MIN_SIDE, MAX_SIDE = 0.2, 0.9
MIN_AREA, MAX_AREA = 0.04, 0.6
# The box's colours must differ from those around it (a ring FOREIGN_RING of its shorter side
# wide): the Bhattacharyya distance of their hue-saturation histograms, at least MIN_FOREIGN.
MIN_FOREIGN = 0.35
FOREIGN_RING = 0.15
HUE_BINS, SATURATION_BINS = 16, 8
# A thumbnail this unsaturated (mean HSV saturation, 0-255) is grey: its brightness histograms
# are compared instead, which tell less apart (grey copies of the same sets: composites found by
# the sides alone 115, with >= 0.20 113; photos fired on 20.7 % -> 17.8 %; at 0.35, 87 / 10.2 %).
GREY_SATURATION, VALUE_BINS, GREY_MIN_FOREIGN = 8.0, 16, 0.20
# A JPEG coarser than this (mean luminance quantisation step; ~quality 20 in libjpeg's tables)
# is not searched: its 8x8 block borders are straight edges everywhere.
MAX_JPEG_QUANTIZATION = 140.0


def _edges(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step edges between horizontal (ex: h x w-1) and vertical (ey: h-1 x w) neighbours, the
    strongest across their line kept and widened by one pixel (a resized border falls between
    two pixels)."""
    def steps(d: np.ndarray) -> np.ndarray:  # the largest step of the three channels
        r, g, b = cv2.split(d)
        return cv2.max(cv2.max(r, g), b)
    dx = steps(cv2.absdiff(a[:, 1:], a[:, :-1]))
    dy = steps(cv2.absdiff(a[1:], a[:-1]))
    ex = dx >= EDGE
    ex[:, 1:] &= dx[:, 1:] >= dx[:, :-1]
    ex[:, :-1] &= dx[:, :-1] >= dx[:, 1:]
    ey = dy >= EDGE
    ey[1:] &= dy[1:] >= dy[:-1]
    ey[:-1] &= dy[:-1] >= dy[1:]
    wx, wy = ex.copy(), ey.copy()
    wx[:, 1:] |= ex[:, :-1]
    wx[:, :-1] |= ex[:, 1:]
    wy[1:] |= ey[:-1]
    wy[:-1] |= ey[1:]
    return wx, wy


def _cumulative(e: np.ndarray) -> np.ndarray:
    """Edge counts along axis 0, from 0: c[j] - c[i] counts rows i..j-1. From OpenCV's integral
    image (sums over rows and columns) by a difference of neighbouring columns: a fifth of the
    time of numpy's cumsum of a bool array along axis 0 (0.025 against 0.11 ms per thumbnail)."""
    return np.diff(cv2.integral(np.ascontiguousarray(e).view(np.uint8)), axis=1)


def _candidates(c: np.ndarray, run: int) -> np.ndarray:
    """Box coordinates (line index + 1) of the lines that may be a side: the CANDIDATES lines
    with the most edges in some window of `run` pixels, and the CONTRAST_CANDIDATES whose window
    stands out most from the lines GAP pixels beside it (a pasted border in a textured photo,
    whose edge count many texture lines equal); each at least MIN_CONTRAST * run edges."""
    win = (c[run:] - c[:-run]).astype(np.int32, copy=False)  # windows x lines
    counts = win.max(axis=0)
    beside = np.empty_like(win)  # the larger window GAP lines before and after (none: 0)
    beside[:, :GAP] = win[:, GAP: 2 * GAP]
    beside[:, -GAP:] = win[:, -2 * GAP: -GAP]
    np.maximum(win[:, : -2 * GAP], win[:, 2 * GAP:], out=beside[:, GAP:-GAP])
    # win - CONTRAST_WEIGHT * beside, in integers (exact: the weight is in quarters)
    stands_out = (win * 4 - beside * round(4 * CONTRAST_WEIGHT)).max(axis=0) / 4.0
    by_count = np.argsort(counts)[::-1][:CANDIDATES]
    by_contrast = np.argsort(stands_out)[::-1][:CONTRAST_CANDIDATES]
    lines = np.union1d(by_count[counts[by_count] >= MIN_CONTRAST * run], by_contrast[stands_out[by_contrast] >= MIN_CONTRAST * run])
    return lines + 1


def _side_contrast(c: np.ndarray, coords: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Contrast of the side at each coordinate in `coords` (rows) spanning each (lo, hi) of the
    other direction (columns); +inf for a side on the image's border (no edge needed)."""
    n_lines = c.shape[1]
    length = (hi - lo).astype(np.float32)
    k = len(coords)
    # The edge line just before each coordinate, GAP before it and GAP after it, in one gather.
    lines = np.clip(np.concatenate([coords - GAP, coords, coords + GAP]) - 1, 0, n_lines - 1)
    counts = c[:, lines]  # positions x 3k
    cover = ((counts[hi] - counts[lo]) / length[:, None]).T  # 3k x spans: the share of each span on an edge
    out = cover[k: 2 * k] - CONTRAST_WEIGHT * np.maximum(cover[:k], cover[2 * k:])
    out[(coords == 0) | (coords == n_lines + 1)] = np.inf
    return out


@functools.cache
def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i < j) of n things, as two index arrays (read-only: shared between calls)."""
    i, j = np.triu_indices(n, 1)
    i.flags.writeable = j.flags.writeable = False
    return i, j


def inset_box(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of a picture pasted into this image, or None."""
    h, w = rgb.shape[:2]
    # An integer shrink factor: OpenCV's area averaging has a fast path for whole factors.
    factor = -(-max(h, w) // THUMB_SIDE)
    th, tw = h // factor, w // factor
    if min(tw, th) < 4 * GAP + 8:
        return None
    cropped = rgb[: th * factor, : tw * factor]  # whole factor: drop < factor px (a view: rows keep their stride)
    thumb = cv2.resize(cropped, (tw, th), interpolation=cv2.INTER_AREA) if factor > 1 else np.ascontiguousarray(cropped)
    ex, ey = _edges(thumb)
    cx, cy = _cumulative(ex), _cumulative(np.ascontiguousarray(ey.T))  # columns, rows
    xs = np.unique(np.concatenate([[0, tw], _candidates(cx, int(MIN_SIDE * th))]))
    ys = np.unique(np.concatenate([[0, th], _candidates(cy, int(MIN_SIDE * tw))]))
    xa, xb = _pairs(len(xs))  # x pairs (as indexes into xs)
    ya, yb = _pairs(len(ys))
    bw, bh = xs[xb] - xs[xa], ys[yb] - ys[ya]
    keep_x = (bw >= MIN_SIDE * tw) & (bw <= MAX_SIDE * tw)
    keep_y = (bh >= MIN_SIDE * th) & (bh <= MAX_SIDE * th)
    xa, xb, bw = xa[keep_x], xb[keep_x], bw[keep_x]
    ya, yb, bh = ya[keep_y], yb[keep_y], bh[keep_y]
    if not len(xa) or not len(ya):
        return None
    # Each side's contrast once per (line, span): vertical sides at every x over every y pair,
    # horizontal ones at every y over every x pair; a box is four lookups.
    vertical = _side_contrast(cx, xs, ys[ya], ys[yb])  # len(xs) x y pairs
    horizontal = _side_contrast(cy, ys, xs[xa], xs[xb])  # len(ys) x x pairs
    # The boxes whose four sides all reach MIN_CONTRAST (few: a side's line holds for some of the
    # spans only), found with boolean products; the scores of those alone.
    v_ok, h_ok = vertical >= MIN_CONTRAST, horizontal >= MIN_CONTRAST
    r, k = np.nonzero(v_ok[xa] & v_ok[xb] & (h_ok[ya] & h_ok[yb]).T)  # x pair, y pair; row-major
    if not len(r):
        return None
    real = (xs[xa[r]] > 0).astype(int) + (xs[xb[r]] < tw) + (ys[ya[k]] > 0) + (ys[yb[k]] < th)
    area = bw[r] * bh[k] / (tw * th)
    weakest = np.minimum(np.minimum(vertical[xa[r], k], vertical[xb[r], k]), np.minimum(horizontal[ya[k], r], horizontal[yb[k], r]))
    score = np.where((real >= 3) & (area >= MIN_AREA) & (area <= MAX_AREA), weakest, -np.inf)
    best = int(np.argmax(score))  # the first of equal scores in row-major order, as over the whole grid
    if not np.isfinite(score[best]):
        return None
    r, k = r[best], k[best]
    x0, y0, x1, y1 = int(xs[xa[r]]), int(ys[ya[k]]), int(xs[xb[r]]), int(ys[yb[k]])
    if not _foreign(thumb, x0, y0, x1, y1):
        return None
    return (x0 * factor, y0 * factor, min(w, x1 * factor), min(h, y1 * factor))


def _foreign(thumb: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether the box's colours are unlike those around it: the Bhattacharyya distance (0: the
    same, 1: disjoint) of the hue-saturation histograms inside the box and in a ring around it
    is at least MIN_FOREIGN (of the brightness histograms in a grey image, GREY_MIN_FOREIGN). A
    pasted photo brings colours of its own; a window, a frame or a screen in a photo is lit and
    coloured like the rest of it."""
    h, w = thumb.shape[:2]
    ring = max(2, int(FOREIGN_RING * min(x1 - x0, y1 - y0)))
    inside = np.zeros((h, w), np.uint8)
    inside[y0:y1, x0:x1] = 1
    around = np.zeros((h, w), np.uint8)
    around[max(0, y0 - ring): y1 + ring, max(0, x0 - ring): x1 + ring] = 1
    around[y0:y1, x0:x1] = 0
    hsv = cv2.cvtColor(thumb, cv2.COLOR_RGB2HSV)
    if hsv[..., 1].mean() < GREY_SATURATION:  # a grey image has one hue and no saturation
        channels, bins, ranges, needed = [2], [VALUE_BINS], [0, 256], GREY_MIN_FOREIGN
    else:
        channels, bins, ranges, needed = [0, 1], [HUE_BINS, SATURATION_BINS], [0, 180, 0, 256], MIN_FOREIGN
    hists = []
    for mask in (inside, around):
        hist = cv2.calcHist([hsv], channels, mask, bins, ranges)
        hists.append(cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1))
    return cv2.compareHist(hists[0], hists[1], cv2.HISTCMP_BHATTACHARYYA) >= needed


def inset_view(image: DecodedImage, *, jpeg_quantization: float = 0.0) -> DecodedImage | None:
    """The picture pasted into this image (see inset_box), or None. None for a JPEG coarser
    than MAX_JPEG_QUANTIZATION (ImageFacts.jpeg_quantization): at quality 5-15 the detector
    found a "picture" in 45 of the hard set's 200 such copies, and those blocky crops of
    different photos matched each other (cosine up to 0.67), one false cluster."""
    if jpeg_quantization > MAX_JPEG_QUANTIZATION:
        return None
    return image.cropped(inset_box(image.rgb))
