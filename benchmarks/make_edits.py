#!/usr/bin/env python3
"""Build a labelled copy-detection set with a WIDER family of edits than the dev benchmark.

The dev benchmark (/work/shared/dedup-bench/make_transformed.py) uses 9 edits (crop, hflip, vflip,
rot25, square, bright, gray, zoom, jpeg). A threshold or preprocessing tuned on those alone may
not carry over to the held-out set, whose edits are different. This script applies 20 other
edits, each with randomised parameters (see EDIT_HELP or `--help`), so that we can check how well
detection generalises:

    .venv/bin/python benchmarks/make_edits.py /tmp/dedup-dev/varied --max-originals 250
    .venv/bin/python -m imgdedup calibrate /tmp/dedup-dev/varied --plot /tmp/varied.png

Output (the same format as make_transformed.py, so `dedup calibrate` and benchmarks/quality.py
read it as is):

    OUT/images/<name>.jpg      originals copied byte for byte + one copy per edit
                               (the `webp` copy is <stem>__webp.webp: a real WebP file)
    OUT/ground_truth.json      {original_name: [copy names, ...]}, sorted
    OUT/edits.json             {copy_name: {"original", "edit", "params"}}
    OUT/meta.json              arguments, edits, counts, library versions

Originals: every photo under --src/<source>/ (for UKBench only the first view of each object,
ukbench00000, 00004, ...: the other views are not copies). `--max-originals N` takes a seeded
random subset. Copies are JPEG quality 90 unless the edit says otherwise.

Deterministic: every random draw comes from a generator seeded with (--seed, original file name,
edit name), so the output does not depend on the order of processing, on --jobs, or on the
subset. Text is drawn with Pillow's built-in font (no system font needed). Needs numpy, Pillow
(with WebP and FreeType) and OpenCV; different library versions may resample or encode slightly
differently. Write OUT outside the repository: never commit the images.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import zlib
from multiprocessing import Pool

import cv2
import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

DEFAULT_SRC = os.environ.get("DEDUP_BENCH_ORIGINALS", "/work/shared/dedup-bench/dev/originals")
DEFAULT_SEED = 7  # not make_transformed.py's 20240607
SAVE_QUALITY = 90
MARKER = ".dedup-edits-output"

EDIT_HELP = {
    "rot90": "rotate 90 deg counter-clockwise (lossless pixel transpose)",
    "rot180": "rotate 180 deg",
    "rot270": "rotate 270 deg counter-clockwise (= 90 clockwise)",
    "rot_small": "rotate +-5..12 deg, then crop the largest centred same-aspect rectangle (no black corners)",
    "rot_large": "rotate +-35..50 deg on the same canvas, corners filled black",
    "perspective": "mild perspective warp: each corner moved by -5..+10%% of width/height (+ = inward), black fill",
    "blur": "Gaussian blur, sigma 1.5..3.0 px",
    "noise": "additive Gaussian noise per channel, sigma 8..20 (of 255)",
    "crop_heavy": "crop keeping 45..60%% of the area (same aspect), random offset",
    "pad": "letterbox/pillarbox: solid border of 10..25%% of the width (left, right) and height (top, bottom), "
           "each side drawn separately; colour black, white or random",
    "overlay": "watermark: semi-transparent text (alpha 0.35..0.7) or an opaque-ish logo badge (alpha 0.6..0.9), "
               "covering 5..15%% of the image at a random place (long text is capped at 95%% of the width: may cover less)",
    "hue": "hue rotated by +-20..60 deg and saturation x0.4..0.7 or x1.3..1.8",
    "contrast": "contrast x0.5..0.7 or x1.4..1.8, then gamma 0.6..0.8 or 1.3..1.7",
    "downscale": "downscale to a short side of 120..200 px (INTER_AREA)",
    "upscale_jpeg": "upscale 2x (bicubic), saved as JPEG quality 60",
    "webp": "re-encode as WebP quality 30..70 (file ends .webp)",
    "combo": "crop keeping 80%% of the area (random offset) + brightness x0.70..0.85 or x1.15..1.30 + hflip, JPEG q40",
    "screenshot": "pasted (own pixels) on a white canvas 1.25..2x as wide (photo = 50..80%% of the width; landscape "
                  "16:10 / 4:3 or phone 9:19.5) with a grey frame, a title bar and grey text lines, like a page screenshot",
    "mirror_rot90": "horizontal flip, then rotate by +90 or -90 deg",
    "vintage": "sepia tone blended at 50..100%% + vignette darkening the corners by 30..60%%",
}
EDITS = list(EDIT_HELP)
EXT = {"webp": ".webp"}
WORDS = ["SAMPLE", "© Photo Studio", "PREVIEW", "stock photo", "@username", "COPYRIGHT 2024", "DRAFT",
         "www.example.com", "Not for sale", "© J. Smith"]


def rng_for(seed: int, name: str, edit: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{name}|{edit}".encode())])


def _sign(rng) -> int:
    return 1 if rng.random() < 0.5 else -1


def _either(rng, lo_range, hi_range) -> float:
    r = lo_range if rng.random() < 0.5 else hi_range
    return float(rng.uniform(*r))


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, int(size)))


def _random_colour(rng) -> tuple[int, int, int]:
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return (0, 0, 0)
    if kind == 1:
        return (255, 255, 255)
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def rotated_crop_scale(w: int, h: int, degrees: float) -> float:
    """Scale s so that a centred (s*w, s*h) rectangle fits inside the image rotated by `degrees`."""
    t = math.radians(abs(degrees))
    c, s = math.cos(t), math.sin(t)
    return min(w / (w * c + h * s), h / (w * s + h * c))


def _crop_area(img: Image.Image, area: float, rng) -> tuple[Image.Image, list[int]]:
    w, h = img.size
    f = math.sqrt(area)
    cw, ch = max(1, round(w * f)), max(1, round(h * f))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    return img.crop((x0, y0, x0 + cw, y0 + ch)), [x0, y0, x0 + cw, y0 + ch]


def _overlay(img: Image.Image, rng) -> tuple[Image.Image, dict]:
    w, h = img.size
    target = float(rng.uniform(0.05, 0.15))
    base = img.convert("RGBA")
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if rng.random() < 0.5:  # semi-transparent text
        text = WORDS[int(rng.integers(0, len(WORDS)))]
        alpha = float(rng.uniform(0.35, 0.70))
        colour = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
        l0, t0, r0, b0 = _font(100).getbbox(text)
        scale = math.sqrt(target * w * h / max(1, (r0 - l0) * (b0 - t0)))
        scale = min(scale, 0.95 * w / max(1, r0 - l0), 0.95 * h / max(1, b0 - t0))
        font = _font(100 * scale)
        l, t, r, b = font.getbbox(text)
        tw, th = r - l, b - t
        x = int(rng.integers(0, max(1, w - tw + 1))) - l
        y = int(rng.integers(0, max(1, h - th + 1))) - t
        stroke = max(1, round(font.size / 25))
        draw.text((x, y), text, font=font, fill=(*colour, round(255 * alpha)),
                  stroke_width=stroke, stroke_fill=(*(255 - c for c in colour), round(255 * alpha * 0.6)))
        params = {"kind": "text", "text": text, "alpha": round(alpha, 3), "colour": list(colour),
                  "font_size": font.size, "box": [x + l, y + t, x + r, y + b],
                  "coverage": round(tw * th / (w * h), 4), "target_coverage": round(target, 4)}
    else:  # logo badge: rounded rectangle or ellipse with an initial and a word
        alpha = float(rng.uniform(0.60, 0.90))
        aspect = float(rng.uniform(1.0, 2.5))  # width / height of the badge
        bh = math.sqrt(target * w * h / aspect)
        bw = min(bh * aspect, 0.9 * w)
        bh = min(bh, 0.9 * h)
        bw, bh = max(8, round(bw)), max(8, round(bh))
        corner = int(rng.integers(0, 5))  # 4 corners or centre
        margin = round(0.03 * min(w, h))
        x0 = [margin, w - bw - margin, margin, w - bw - margin, (w - bw) // 2][corner]
        y0 = [margin, margin, h - bh - margin, h - bh - margin, (h - bh) // 2][corner]
        x0, y0 = max(0, x0), max(0, y0)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        ink = (255, 255, 255) if sum(fill) < 384 else (0, 0, 0)
        shape = "ellipse" if rng.random() < 0.4 else "rounded"
        box = [x0, y0, x0 + bw, y0 + bh]
        if shape == "ellipse":
            draw.ellipse(box, fill=(*fill, round(255 * alpha)))
        else:
            draw.rounded_rectangle(box, radius=round(min(bw, bh) * 0.2), fill=(*fill, round(255 * alpha)))
        text = WORDS[int(rng.integers(0, len(WORDS)))].split()[-1][:8].upper()
        font = _font(bh * 0.4)
        l, t, r, b = font.getbbox(text)
        if r - l > bw * 0.8:
            font = _font(font.size * bw * 0.8 / (r - l))
            l, t, r, b = font.getbbox(text)
        draw.text((x0 + (bw - (r - l)) / 2 - l, y0 + (bh - (b - t)) / 2 - t), text, font=font,
                  fill=(*ink, round(255 * min(1.0, alpha + 0.1))))
        params = {"kind": "logo", "shape": shape, "text": text, "alpha": round(alpha, 3), "fill": list(fill),
                  "box": box, "coverage": round(bw * bh / (w * h), 4), "target_coverage": round(target, 4)}
    return Image.alpha_composite(base, layer).convert("RGB"), params


def _screenshot(img: Image.Image, rng) -> tuple[Image.Image, dict]:
    w, h = img.size
    layout = ["16:10", "4:3", "9:19.5"][int(rng.integers(0, 3))]
    ratio = {"16:10": 16 / 10, "4:3": 4 / 3, "9:19.5": 9 / 19.5}[layout]  # canvas width / height
    frac = float(rng.uniform(0.50, 0.80))  # the image's share of the canvas width
    cw = round(w / frac)  # the photo keeps its own pixels; the canvas grows around it
    ch = round(cw / ratio)
    bar = round(0.06 * min(cw, ch))
    if ch < h + bar + 2 * round(0.04 * ch):  # too short: grow the canvas height, keep its width
        ch = h + bar + round(0.25 * h)
    canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    grey = int(rng.integers(200, 236))
    draw.rectangle([0, 0, cw - 1, bar], fill=(grey, grey, grey + (255 - grey) // 3))
    for k in range(3):  # window buttons
        r = bar // 4
        cx = bar // 2 + k * (bar * 2 // 3)
        draw.ellipse([cx - r, bar // 2 - r, cx + r, bar // 2 + r], fill=[(237, 106, 94), (245, 191, 79), (98, 197, 84)][k])
    title = WORDS[int(rng.integers(0, len(WORDS)))]
    draw.text((bar * 3, bar * 0.25), title, font=_font(bar * 0.5), fill=(60, 60, 60))
    x0 = int(rng.integers(round(0.03 * cw), max(round(0.03 * cw) + 1, cw - w - round(0.03 * cw) + 1)))
    free_h = ch - bar - h
    y0 = bar + int(rng.integers(max(1, round(0.03 * ch)), max(round(0.03 * ch) + 1, free_h // 2 + 1)))
    y0 = min(y0, ch - h)
    frame = int(rng.integers(1, 5))
    draw.rectangle([x0 - frame, y0 - frame, x0 + w - 1 + frame, y0 + h - 1 + frame], fill=(120, 120, 120))
    canvas.paste(img, (x0, y0))
    line_h = max(4, round(0.015 * ch))
    y = y0 + h + frame + 2 * line_h
    while y + line_h < ch - line_h:  # grey "text" lines under the photo
        length = float(rng.uniform(0.4, 0.9))
        draw.rectangle([x0, y, x0 + round((cw - 2 * x0) * length), y + line_h], fill=(215, 215, 215))
        y += 2 * line_h
    params = {"layout": layout, "canvas": [cw, ch], "photo_box": [x0, y0, x0 + w, y0 + h],
              "width_fraction": round(w / cw, 4), "frame_px": frame, "title_bar_px": bar}
    return canvas, params


def apply_edit(img: Image.Image, edit: str, rng: np.random.Generator) -> tuple[Image.Image, dict, dict]:
    """img: RGB PIL image. Returns (edited image, params, save options {"format", "quality"})."""
    w, h = img.size
    save = {"format": "JPEG", "quality": SAVE_QUALITY}
    if edit == "rot90":
        out, params = img.transpose(Image.Transpose.ROTATE_90), {"degrees": 90}
    elif edit == "rot180":
        out, params = img.transpose(Image.Transpose.ROTATE_180), {"degrees": 180}
    elif edit == "rot270":
        out, params = img.transpose(Image.Transpose.ROTATE_270), {"degrees": 270}
    elif edit == "rot_small":
        deg = _sign(rng) * float(rng.uniform(5, 12))
        rot = img.rotate(deg, resample=Image.BICUBIC, expand=False)
        s = rotated_crop_scale(w, h, deg) * 0.995  # a hair inside: no interpolated black at the edge
        cw, ch = max(1, math.floor(w * s)), max(1, math.floor(h * s))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        out = rot.crop((x0, y0, x0 + cw, y0 + ch))
        params = {"degrees": round(deg, 3), "crop": [x0, y0, x0 + cw, y0 + ch], "kept_area": round(cw * ch / (w * h), 4)}
    elif edit == "rot_large":
        deg = _sign(rng) * float(rng.uniform(35, 50))
        out = img.rotate(deg, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
        params = {"degrees": round(deg, 3), "expand": False}
    elif edit == "perspective":
        src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
        inward = rng.uniform(-0.05, 0.10, size=(4, 2))
        dirs = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
        dst = (src + dirs * inward * np.float32([w, h])).astype(np.float32)
        m = cv2.getPerspectiveTransform(src, dst)
        arr = cv2.warpPerspective(np.asarray(img), m, (w, h), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        out = Image.fromarray(arr)
        params = {"corner_shift_fraction": np.round(inward, 4).tolist(), "dst": np.round(dst, 1).tolist()}
    elif edit == "blur":
        sigma = float(rng.uniform(1.5, 3.0))
        out = Image.fromarray(cv2.GaussianBlur(np.asarray(img), (0, 0), sigmaX=sigma, sigmaY=sigma))
        params = {"sigma": round(sigma, 3)}
    elif edit == "noise":
        sigma = float(rng.uniform(8, 20))
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, sigma, size=(h, w, 3)).astype(np.float32)
        out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        params = {"sigma": round(sigma, 3)}
    elif edit == "crop_heavy":
        area = float(rng.uniform(0.45, 0.60))
        out, box = _crop_area(img, area, rng)
        params = {"area": round(area, 4), "box": box}
    elif edit == "pad":
        fr = rng.uniform(0.10, 0.25, size=4)  # left, top, right, bottom
        left, right = round(w * fr[0]), round(w * fr[2])
        top, bottom = round(h * fr[1]), round(h * fr[3])
        colour = _random_colour(rng)
        out = ImageOps.expand(img, border=(left, top, right, bottom), fill=colour)
        params = {"border_ltrb": [left, top, right, bottom], "colour": list(colour),
                  "photo_area_fraction": round(w * h / (out.size[0] * out.size[1]), 4)}
    elif edit == "overlay":
        out, params = _overlay(img, rng)
    elif edit == "hue":
        shift = _sign(rng) * float(rng.uniform(20, 60))
        sat = _either(rng, (0.4, 0.7), (1.3, 1.8))
        hsv = cv2.cvtColor(np.asarray(img).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)  # H in [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + shift, 360.0)
        hsv[..., 1] = np.clip(hsv[..., 1] * sat, 0.0, 1.0)
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = Image.fromarray(np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))
        params = {"hue_shift_deg": round(shift, 3), "saturation": round(sat, 4)}
    elif edit == "contrast":
        c = _either(rng, (0.5, 0.7), (1.4, 1.8))
        g = _either(rng, (0.6, 0.8), (1.3, 1.7))
        tmp = ImageEnhance.Contrast(img).enhance(c)
        lut = [min(255, max(0, round(255 * (i / 255) ** g))) for i in range(256)]
        out = tmp.point(lut * 3)
        params = {"contrast": round(c, 4), "gamma": round(g, 4)}
    elif edit == "downscale":
        short = int(rng.integers(120, 201))
        f = short / min(w, h)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        out = Image.fromarray(cv2.resize(np.asarray(img), size, interpolation=cv2.INTER_AREA))
        params = {"short_side": short, "size": list(size)}
    elif edit == "upscale_jpeg":
        out = img.resize((2 * w, 2 * h), Image.BICUBIC)
        save["quality"] = 60
        params = {"scale": 2, "quality": 60}
    elif edit == "webp":
        q = int(rng.integers(30, 71))
        out, save = img, {"format": "WEBP", "quality": q}
        params = {"quality": q}
    elif edit == "combo":
        cropped, box = _crop_area(img, 0.80, rng)
        b = _either(rng, (0.70, 0.85), (1.15, 1.30))
        out = ImageOps.mirror(ImageEnhance.Brightness(cropped).enhance(b))
        save["quality"] = 40
        params = {"area": 0.80, "box": box, "brightness": round(b, 4), "hflip": True, "quality": 40}
    elif edit == "screenshot":
        out, params = _screenshot(img, rng)
    elif edit == "mirror_rot90":
        deg = 90 * _sign(rng)
        out = ImageOps.mirror(img).transpose(Image.Transpose.ROTATE_90 if deg > 0 else Image.Transpose.ROTATE_270)
        params = {"hflip": True, "degrees": deg}
    elif edit == "vintage":
        strength = float(rng.uniform(0.5, 1.0))
        vig = float(rng.uniform(0.3, 0.6))
        arr = np.asarray(img).astype(np.float32)
        sepia = arr @ np.float32([[0.393, 0.349, 0.272], [0.769, 0.686, 0.534], [0.189, 0.168, 0.131]])
        arr = (1 - strength) * arr + strength * sepia
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - (w - 1) / 2) / (w / 2)) ** 2 + ((yy - (h - 1) / 2) / (h / 2)) ** 2  # 0 centre, 2 corners
        arr *= (1 - vig * np.clip(r2 / 2, 0, 1) ** 1.5)[..., None]
        out = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        params = {"sepia_strength": round(strength, 4), "vignette": round(vig, 4)}
    else:
        raise ValueError(edit)
    return out, params, save


def stem_of(source: str, fname: str) -> str:
    return f"{source}-{os.path.splitext(fname)[0]}"


def list_sources(src: str) -> list[str]:
    return sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))


def list_images(src: str, source: str) -> list[str]:
    d = os.path.join(src, source)
    return sorted(f for f in os.listdir(d) if f.lower().endswith((".jpg", ".jpeg")))


def collect_originals(src: str, sources: list[str]) -> list[tuple[str, str]]:
    items = []
    for source in sources:
        for f in list_images(src, source):
            if source == "ukbench" and int(os.path.splitext(f)[0][len("ukbench"):]) % 4 != 0:
                continue  # the other views of an object are not copies
            items.append((source, f))
    return items


def _work(job):
    src, out_dir, seed, edits, source, fname = job
    cv2.setNumThreads(1)
    stem = stem_of(source, fname)
    path = os.path.join(src, source, fname)
    orig_name = stem + ".jpg"
    shutil.copyfile(path, os.path.join(out_dir, "images", orig_name))  # byte-identical
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    copies = {}
    for edit in edits:
        out, params, save = apply_edit(im, edit, rng_for(seed, fname, edit))
        name = f"{stem}__{edit}{EXT.get(edit, '.jpg')}"
        if save["format"] == "WEBP":
            out.save(os.path.join(out_dir, "images", name), "WEBP", quality=save["quality"], method=4)
        else:
            out.save(os.path.join(out_dir, "images", name), "JPEG", quality=save["quality"])
        copies[name] = {"original": orig_name, "edit": edit, "params": params}
    return orig_name, copies


def prepare_out(out: str, overwrite: bool) -> None:
    marker = os.path.join(out, MARKER)
    if os.path.exists(out) and os.listdir(out):
        if not (overwrite and os.path.exists(marker)):
            sys.exit(f"{out} is not empty (use --overwrite to replace an earlier output of this script)")
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    open(marker, "w").close()


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def build(args) -> dict:
    sources = args.sources or list_sources(args.src)
    items = collect_originals(args.src, sources)
    if args.max_originals and args.max_originals < len(items):
        perm = np.random.default_rng(args.seed).permutation(len(items))
        items = [items[i] for i in sorted(perm[: args.max_originals])]
    edits = args.edits or EDITS
    prepare_out(args.out, args.overwrite)
    jobs = [(args.src, args.out, args.seed, edits, s, f) for s, f in items]
    gt, edit_log = {}, {}
    with Pool(args.jobs) as pool:
        for orig, copies in pool.imap_unordered(_work, jobs, chunksize=4):
            gt[orig] = sorted(copies)
            edit_log.update(copies)
    write_json(os.path.join(args.out, "ground_truth.json"), dict(sorted(gt.items())))
    write_json(os.path.join(args.out, "edits.json"), dict(sorted(edit_log.items())))
    meta = {"mode": "edits", "generator": "benchmarks/make_edits.py", "seed": args.seed, "src": args.src,
            "sources": sources, "edits": edits,
            "edit_descriptions": {e: EDIT_HELP[e].replace("%%", "%") for e in edits},
            "pillow": PIL.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "ground_truth_format": "{original: [duplicates]}; images in the same list (with its key) are "
                                   "duplicates of each other; every other pair is not a duplicate",
            "n_originals": len(gt), "n_copies": len(edit_log), "n_images": len(gt) + len(edit_log)}
    write_json(os.path.join(args.out, "meta.json"), meta)
    return meta


def main() -> None:
    epilog = "edits:\n" + "\n".join(f"  {e:<13} {d.replace('%%', '%')}" for e, d in EDIT_HELP.items())
    p = argparse.ArgumentParser(description=__doc__, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", help="output folder (outside the repository)")
    p.add_argument("--src", default=DEFAULT_SRC, help=f"originals root with one folder per source (default {DEFAULT_SRC})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--sources", nargs="*", help="subfolders of --src to use (default: all)")
    p.add_argument("--edits", nargs="*", choices=EDITS, help="edits to apply (default: all)")
    p.add_argument("--max-originals", type=int, default=0, help="a seeded random subset of this many originals (default: all)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output of this script in OUT")
    args = p.parse_args()
    args.src = os.path.abspath(args.src)
    meta = build(args)
    print(json.dumps({k: v for k, v in meta.items() if k.startswith("n_")}))


if __name__ == "__main__":
    main()
