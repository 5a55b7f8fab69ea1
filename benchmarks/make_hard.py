#!/usr/bin/env python3
"""Build a hard, DISC21-style copy-detection set from the dev photos with Meta's AugLy.

The Image Similarity Challenge (DISC21) made its copies with AugLy; this makes the same kinds of
copy of our dev photos (never of the photos kept apart for evaluation):

    .venv/bin/pip install -e ".[augly]"      # AugLy 1.0.0, without its `image` extra (old Pillow)
    .venv/bin/python benchmarks/make_hard.py /tmp/dedup-dev/hard [--originals 200 --distractors 100]
    .venv/bin/python benchmarks/quality.py /tmp/dedup-dev/hard

Output, in the dev-bench format (so `dedup calibrate` and benchmarks/quality.py read it as is):

    OUT/images/            originals copied byte for byte, <stem>__<family>.jpg copies
    OUT/ground_truth.json  {original: [copies]}; distractors are originals with no copies
    OUT/edits.json         {copy: {"original", "edit", "params"[, "other"]}}: "other" names the
                           second photo of a composite (the background a photo was pasted on):
                           the composite belongs to the pasted photo's group, and scoring leaves
                           the pair (composite, other photo's group) out; a merge of the two
                           photos' clusters still counts as false pairs
    OUT/meta.json          arguments, families, counts, library versions

Families (one copy of each per original; see FAMILIES): a photo pasted small onto another photo
(paste), into a screenshot (screenshot), a meme caption (meme), emoji (emoji), text (text) and
stripes (stripes) drawn over it, rotation by any angle (rotate), pixelation (pixelate), a 100-px
thumbnail (thumb), JPEG quality 5-15 (jpeg), a crop keeping 25-35 % of the area (crop), a
perspective warp with blur (warp), rotation + colour jitter + emoji (rot_jitter_emoji), and two
or three of the others at once (combo). Deterministic: every draw comes from a generator seeded
with (--seed, the photo's file name, the family). Write OUT outside the repository.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_edits import DEFAULT_SRC, collect_originals, list_sources, prepare_out, rng_for, stem_of, write_json  # noqa: E402

DEFAULT_SEED = 11  # not make_edits.py's 7 nor make_transformed.py's
SAVE_QUALITY = 90
WORDS = ["when", "the", "code", "finally", "works", "monday", "again", "me", "trying", "to", "explain", "nobody",
         "expects", "this", "weekend", "mood", "look", "at", "that", "friday", "why", "not", "best", "day", "ever"]


def _shim_augly():
    """AugLy 1.0.0 on today's numpy and Pillow: two names they removed."""
    if not hasattr(np, "float"):
        np.float = float  # numpy 1.24 removed the alias; augly's bbox helpers use it
    if not hasattr(ImageFont.FreeTypeFont, "getsize_multiline"):
        def getsize_multiline(font, text, *args, **kwargs):  # Pillow 10 removed it
            box = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox((0, 0), text, font=font)
            return box[2] - box[0], box[3] - box[1]
        ImageFont.FreeTypeFont.getsize_multiline = getsize_multiline
    import augly
    import augly.image as imaugs

    return augly, imaugs


augly, A = _shim_augly()
ASSETS = Path(augly.__file__).parent / "assets"
EMOJIS = sorted(str(p) for p in (ASSETS / "twemojis").rglob("*.png"))
FONTS = sorted(str(p) for p in (ASSETS / "fonts").glob("*.ttf") if "Emoji" not in p.name)


def _colour(rng) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def _emoji(img, rng):
    path = EMOJIS[rng.integers(len(EMOJIS))]
    p = {"emoji": str(Path(path).relative_to(ASSETS / "twemojis")), "size": round(float(rng.uniform(0.15, 0.35)), 3),
         "x": round(float(rng.uniform(0, 0.7)), 3), "y": round(float(rng.uniform(0, 0.7)), 3), "opacity": round(float(rng.uniform(0.7, 1)), 3)}
    return A.overlay_emoji(img, emoji_path=path, emoji_size=p["size"], x_pos=p["x"], y_pos=p["y"], opacity=p["opacity"]), p


def _rotate(img, rng):
    p = {"degrees": round(float(rng.uniform(-180, 180)), 1)}
    return A.rotate(img, degrees=p["degrees"]), p


def _jitter(img, rng):
    p = {"brightness": round(float(rng.uniform(0.6, 1.5)), 2), "contrast": round(float(rng.uniform(0.6, 1.6)), 2),
         "saturation": round(float(rng.uniform(0.3, 2.0)), 2)}
    return A.color_jitter(img, brightness_factor=p["brightness"], contrast_factor=p["contrast"], saturation_factor=p["saturation"]), p


def _meme(img, rng):
    text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(2, 5)))).upper()
    p = {"text": text, "caption_height": int(rng.integers(img.height // 6, img.height // 3 + 1)), "bg": _colour(rng)}
    font = next((f for f in FONTS if "Raleway" in f), FONTS[0])  # AugLy's default, with Latin glyphs
    return A.meme_format(img, text=text, font_file=font, caption_height=p["caption_height"], meme_bg_color=p["bg"],
                         text_color=tuple(255 - c for c in p["bg"])), p


def _text(img, rng):
    p = {"chars": [int(c) for c in rng.integers(10, 1000, int(rng.integers(4, 12)))], "size": round(float(rng.uniform(0.08, 0.2)), 3),
         "x": round(float(rng.uniform(0, 0.5)), 3), "y": round(float(rng.uniform(0, 0.8)), 3), "colour": _colour(rng)}
    font = next((f for f in FONTS if "NotoNaskhArabic" in f), FONTS[0])  # AugLy's default: its chars are this font's
    return A.overlay_text(img, text=p["chars"], font_file=font, font_size=p["size"], x_pos=p["x"], y_pos=p["y"], color=p["colour"]), p


def _stripes(img, rng):
    p = {"width": round(float(rng.uniform(0.1, 0.6)), 2), "angle": round(float(rng.uniform(-90, 90)), 1),
         "density": round(float(rng.uniform(0.3, 0.8)), 2), "type": ["solid", "dotted", "dashed"][rng.integers(3)],
         "opacity": round(float(rng.uniform(0.5, 1)), 2), "colour": _colour(rng)}
    return A.overlay_stripes(img, line_width=p["width"], line_angle=p["angle"], line_density=p["density"], line_type=p["type"],
                             line_opacity=p["opacity"], line_color=p["colour"]), p


def _pixelate(img, rng):
    p = {"ratio": round(float(rng.uniform(0.08, 0.25)), 3)}
    return A.pixelization(img, ratio=p["ratio"]), p


def _thumb(img, rng):
    side = 100
    scale = side / max(img.size)
    p = {"size": [max(1, round(img.width * scale)), max(1, round(img.height * scale))]}
    return A.resize(img, width=p["size"][0], height=p["size"][1]), p


def _crop(img, rng):
    area = float(rng.uniform(0.25, 0.35))
    aspect = float(rng.uniform(0.7, 1.4))
    w = min(1.0, np.sqrt(area * aspect))
    h = min(1.0, area / w)
    x, y = float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h))
    p = {"box": [round(x, 3), round(y, 3), round(x + w, 3), round(y + h, 3)]}
    return A.crop(img, x1=p["box"][0], y1=p["box"][1], x2=p["box"][2], y2=p["box"][3]), p


def _warp(img, rng):
    p = {"sigma": round(float(rng.uniform(20, 60)), 1), "seed": int(rng.integers(1 << 30)), "blur": round(float(rng.uniform(0.5, 2.5)), 2)}
    out = A.perspective_transform(img, sigma=p["sigma"], seed=p["seed"])
    return A.blur(out, radius=p["blur"]), p


def _screenshot(img, rng):
    templates = sorted((ASSETS / "screenshot_templates").glob("*.png"))
    template = templates[rng.integers(len(templates))]
    p = {"template": template.name}
    return A.overlay_onto_screenshot(img, template_filepath=str(template),
                                     template_bboxes_filepath=str(ASSETS / "screenshot_templates" / "bboxes.json")), p


def _paste(img, rng, background):
    p = {"size": round(float(rng.uniform(0.3, 0.5)), 3), "x": round(float(rng.uniform(0, 0.5)), 3), "y": round(float(rng.uniform(0, 0.5)), 3)}
    return A.overlay_onto_background_image(img, background_image=background, overlay_size=p["size"], x_pos=p["x"], y_pos=p["y"]), p


def _rot_jitter_emoji(img, rng):
    out, p1 = _rotate(img, rng)
    out, p2 = _jitter(out, rng)
    out, p3 = _emoji(out, rng)
    return out, {"rotate": p1, "jitter": p2, "emoji": p3}


SIMPLE = {"screenshot": _screenshot, "meme": _meme, "emoji": _emoji, "text": _text, "stripes": _stripes, "rotate": _rotate,
          "pixelate": _pixelate, "thumb": _thumb, "crop": _crop, "warp": _warp, "rot_jitter_emoji": _rot_jitter_emoji}
COMBINABLE = ["meme", "emoji", "text", "stripes", "rotate", "pixelate", "crop", "warp"]


def _combo(img, rng):
    chosen = [COMBINABLE[i] for i in rng.choice(len(COMBINABLE), int(rng.integers(2, 4)), replace=False)]
    params = {}
    out = img
    for name in chosen:
        out, params[name] = SIMPLE[name](out, rng)
    if rng.random() < 0.5:
        q = int(rng.integers(20, 60))
        out, params["jpeg"] = A.encoding_quality(out, quality=q), {"quality": q}
    return out, params


FAMILIES = ["paste", *SIMPLE, "jpeg", "combo"]


def _open(path: str) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def _work(job):
    src, out_dir, seed, source, fname, background = job
    stem = stem_of(source, fname)
    orig_name = stem + ".jpg"
    shutil.copyfile(os.path.join(src, source, fname), os.path.join(out_dir, "images", orig_name))
    img = _open(os.path.join(src, source, fname))
    copies = {}
    for family in FAMILIES:
        rng = rng_for(seed, fname, family)
        quality = SAVE_QUALITY
        extra = {}
        if family == "paste":
            bg_source, bg_file = background
            out, params = _paste(img, rng, _open(os.path.join(src, bg_source, bg_file)))
            extra["other"] = stem_of(bg_source, bg_file) + ".jpg"
        elif family == "jpeg":
            quality = int(rng.integers(5, 16))
            out, params = img, {"quality": quality}
        elif family == "combo":
            out, params = _combo(img, rng)
        else:
            out, params = SIMPLE[family](img, rng)
        name = f"{stem}__{family}.jpg"
        out.convert("RGB").save(os.path.join(out_dir, "images", name), "JPEG", quality=quality)
        copies[name] = {"original": orig_name, "edit": family, "params": params, **extra}
    return orig_name, copies


def build(args) -> dict:
    sources = args.sources or list_sources(args.src)
    items = collect_originals(args.src, sources)
    perm = np.random.default_rng(args.seed).permutation(len(items))
    originals = [items[i] for i in sorted(perm[: args.originals])]
    distractors = [items[i] for i in sorted(perm[args.originals: args.originals + args.distractors])]
    prepare_out(args.out, args.overwrite)
    # Each pasted photo's background: another original half of the time (then the composite sits
    # between two groups), else a distractor; drawn per photo, independent of the order of work.
    jobs = []
    for source, fname in originals:
        rng = rng_for(args.seed, fname, "background")
        pool = originals if (rng.random() < 0.5 and len(originals) > 1) else (distractors or originals)
        choices = [o for o in pool if o != (source, fname)]
        jobs.append((args.src, args.out, args.seed, source, fname, choices[rng.integers(len(choices))]))
    gt, edit_log = {}, {}
    with Pool(args.jobs) as workers:
        for orig, copies in workers.imap_unordered(_work, jobs, chunksize=2):
            gt[orig] = sorted(copies)
            edit_log.update(copies)
    for source, fname in distractors:
        name = stem_of(source, fname) + ".jpg"
        shutil.copyfile(os.path.join(args.src, source, fname), os.path.join(args.out, "images", name))
        gt[name] = []
    write_json(os.path.join(args.out, "ground_truth.json"), dict(sorted(gt.items())))
    write_json(os.path.join(args.out, "edits.json"), dict(sorted(edit_log.items())))
    meta = {"mode": "hard", "generator": "benchmarks/make_hard.py", "seed": args.seed, "src": args.src, "sources": sources,
            "families": FAMILIES, "augly": importlib.metadata.version("augly"), "pillow": PIL.__version__, "numpy": np.__version__,
            "n_originals": len(originals), "n_distractors": len(distractors), "n_copies": len(edit_log),
            "n_images": len(originals) + len(distractors) + len(edit_log)}
    write_json(os.path.join(args.out, "meta.json"), meta)
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("out")
    p.add_argument("--src", default=DEFAULT_SRC)
    p.add_argument("--sources", nargs="*")
    p.add_argument("--originals", type=int, default=200, help="photos that get copies")
    p.add_argument("--distractors", type=int, default=100, help="other photos, stored without copies (and pasted onto)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    print(json.dumps({k: v for k, v in build(args).items() if k.startswith("n_")}))


if __name__ == "__main__":
    main()
