"""Precision at a million: how often does an unrelated photo score above the threshold?

    .venv/bin/python benchmarks/tail.py [--bench ../shared/dedup-bench] [--model sscd_disc_mixup]

Every real photo at hand is embedded as the server embeds it (its decoding, preprocessing and
model): the dev set's 1,496 originals and the photos scikit-image ships. Every pair of different
photos is an unrelated pair, except views of one UKBench object (near-duplicates: scored apart,
for comparison) and scikit-image's stereo pair. For a threshold t, p(t) is the share of
unrelated pairs scoring >= t: measured where pairs reach it, and beyond, from a generalized Pareto
tail fitted to the pairs above the 99.9th percentile (peaks over threshold; the fit above the
99.5th is printed too, to show how much the estimate depends on that choice). A query against N
stored unrelated images then meets N * p(t) false matches on average; at store time each one
merges two clusters that should stay apart.

The photos are diverse (one ImageNet photo per class, Berkeley and UKBench scenes), so this tail
is a lower bound for a collection of a million photos of similar things (a marketplace's
listings): quote it as such.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _server import machine  # noqa: E402

from imgdedup.calibrate import embed_named  # noqa: E402
from imgdedup.runtime import load_spec  # noqa: E402
from imgdedup.tail import SIZES as NS, THRESHOLDS, Tail, _n, _t, tail_block  # noqa: E402  (the fit `dedup tail` makes of your photos)

# scikit-image's photographs (its drawings, charts, text pages and synthetic images left out;
# `chelsea` is `cat`); of the stereo pair only the left view (the right one is a near-duplicate).
SKIMAGE_PHOTOS = ["astronaut", "brick", "camera", "cat", "cell", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
                  "immunohistochemistry", "microaneurysms", "moon", "stereo_motorcycle", "retina", "rocket"]


def photos(bench: Path) -> dict[str, Callable[[], bytes]]:
    readers = {}
    for path in sorted((bench / "dev" / "originals").glob("*/*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"):
            readers[f"{path.parent.name}/{path.name}"] = path.read_bytes
    from skimage import data

    for name in SKIMAGE_PHOTOS:
        def read(name=name) -> bytes:
            img = getattr(data, name)()
            if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
                img = img[0]
            if img.ndim == 2:
                img = np.dstack([img] * 3)
            ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2BGR))
            return buf.tobytes()
        readers[f"skimage/{name}"] = read
    return readers


def cached_embeddings(cache: Path, names: list[str], read: Callable[[str], bytes], model: str) -> tuple[list[str], np.ndarray]:
    """Embeddings of `names` as the server makes them, kept in `cache` between runs (outside the
    project; used again while the model and every photo's bytes are the same: another model, or
    a photo changed under its name, embeds them all again)."""
    key = hashlib.sha256(model.encode())
    for name in sorted(names):
        key.update(name.encode() + b"\0" + hashlib.sha256(read(name)).digest())
    if cache.is_file():
        c = np.load(cache)
        if "key" in c.files and str(c["key"]) == key.hexdigest():
            return c["names"].tolist(), c["vectors"]
    kept, vectors, failed = embed_named(names, read, model, max_pixels=60_000_000)
    if failed:
        print(f"{len(failed)} images could not be decoded: {failed[:5]}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, names=np.array(kept), vectors=vectors, key=np.array(key.hexdigest()))
    return kept, vectors


def group_of(name: str) -> str:
    """UKBench files come in fours (one object); every other photo is its own group."""
    folder, file = name.split("/", 1)
    if folder == "ukbench":
        digits = "".join(c for c in file if c.isdigit())
        return f"ukbench/{int(digits) // 4}"
    return name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=Path, default=HERE.parent.parent / "shared" / "dedup-bench")
    p.add_argument("--model", default="sscd_disc_mixup")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "imgdedup-bench" / "tail-embeddings.npz",
                   help="embeddings are kept here between runs (outside the project)")
    args = p.parse_args()
    readers = photos(args.bench)
    names, vectors = cached_embeddings(args.cache, list(readers), lambda n: readers[n](), args.model)
    spec = load_spec(args.model)
    groups = np.array([group_of(n) for n in names])
    sims = vectors @ vectors.T
    iu = np.triu_indices(len(names), k=1)
    same = groups[iu[0]] == groups[iu[1]]
    pair_sims = sims[iu]
    unrelated, near = pair_sims[~same], pair_sims[same]
    tails = {q: Tail(unrelated, q) for q in (0.999, 0.995)}
    main_tail = tails[0.999]
    top = np.argsort(-np.where(same, -2, pair_sims))[:5]

    print(f"machine: {machine()}")
    print(f"model {spec.name}; {len(names)} photos ({sum(n.startswith('skimage/') for n in names)} from scikit-image); "
          f"{len(unrelated):,} unrelated pairs, {len(near)} same-object UKBench pairs")
    print(f"unrelated: mean {unrelated.mean():.3f}, sd {unrelated.std():.3f}, 99.9th pct {main_tail.u:.3f}, max {unrelated.max():.3f}; "
          f"UKBench same-object: median {np.median(near):.3f}, min {near.min():.3f}, max {near.max():.3f}")
    print("closest unrelated pairs: " + "; ".join(f"{names[iu[0][k]]} ~ {names[iu[1][k]]} {pair_sims[k]:.3f}" for k in top))
    for q, t in tails.items():
        print(f"tail fit above the {q * 100:.1f}th percentile ({t.u:.3f}, {t.n_over} pairs): shape {t.shape:.3f}, scale {t.scale:.4f}, "
              f"upper end {t.endpoint:.3f}")
    print()
    print(f"{'t':>5} {'pairs >= t':>10} {'p(t)':>9} {'p(t) 99.5':>9} " + " ".join(f"{'false/q @' + _n(n):>13}" for n in NS)
          + f" {'P(any) @1M':>10}")
    for t in THRESHOLDS:
        pt = main_tail.p(t)
        print(f"{t:>5.2f} {main_tail.counted(t):>10} {pt:>9.2e} {tails[0.995].p(t):>9.2e} "
              + " ".join(f"{n * pt:>13.3g}" for n in NS) + f" {1 - math.exp(-1_000_000 * pt):>10.3f}")
    print()
    default = spec.search.default_threshold
    for rate in (0.01, 0.001):
        print(f"threshold for <= {rate} false matches per query: " + ", ".join(
            f"{_n(n)}: {_t(main_tail.threshold_for(rate, n))} (99.5 fit {_t(tails[0.995].threshold_for(rate, n))})" for n in NS))
    print(f"default threshold {default}: {main_tail.p(default):.2e} per pair -> {1e6 * main_tail.p(default):.3g} false matches per query "
          f"at 1M, {1e7 * main_tail.p(default):.3g} at 10M; UKBench same-object pairs at or above it: {np.mean(near >= default):.2f}")
    # The fit, as the model spec keeps it (the server's operating point, core/operating_point.py).
    print()
    print(tail_block(main_tail, f"benchmarks/tail.py: {len(names)} photos, {len(unrelated):,} unrelated pairs, fit above the 99.9th percentile"), end="")


if __name__ == "__main__":
    main()
