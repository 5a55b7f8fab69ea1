#!/usr/bin/env python3
"""Copies against other shots of one scene: the table behind the model spec's [search.kinds].

Embeds, the server's way, the UKBench photos of the dev bench (4 views of each object: other
shots of one scene) and, when given, copies of photos with their originals (a set made by
make_transformed.py and one made by benchmarks/make_hard.py; a composite's pasted photo is
left out, as the whole composite is another picture), then prints, for each similarity t,
the share of same-object view pairs and of copy-original pairs at or above t, and how often
two unrelated photos reach t by the spec's fitted tail:

    .venv/bin/python benchmarks/near_duplicates.py [--dev /tmp/dedup-dev/small] [--hard /tmp/dedup-dev/hard]

copy_similarity is where few other views reach (they would be called copies above it); the
near-duplicate threshold is where most of them are found while unrelated photos stay rare.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
from pathlib import Path

import numpy as np

from imgdedup.calibrate import embed_named
from imgdedup.runtime import load_spec

BENCH = Path(__file__).resolve().parents[2] / "shared" / "dedup-bench"
THRESHOLDS = [0.40, 0.45, 0.475, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.88, 0.90]


def embed(names: list[str], folder: Path, model: str) -> dict[str, np.ndarray]:
    kept, vectors, _ = embed_named(names, lambda n: (folder / n).read_bytes(), model, max_pixels=100_000_000)
    return dict(zip(kept, vectors))


def view_pairs(bench: Path, model: str) -> np.ndarray:
    folder = bench / "dev" / "originals" / "ukbench"
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".jpg")
    v = embed(names, folder, model)
    obj = lambda n: int(n.removeprefix("ukbench")[:5]) // 4  # 4 views per object
    return np.array([float(v[a] @ v[b]) for a, b in itertools.combinations(sorted(v), 2) if obj(a) == obj(b)])


def copy_pairs(root: Path, model: str) -> tuple[np.ndarray, int]:
    edits = json.loads((root / "edits.json").read_text())
    copies = {c: e["original"] for c, e in edits.items() if e["edit"] != "paste"}
    v = embed(sorted(set(copies) | set(copies.values())), root / "images", model)
    sims = [float(v[c] @ v[o]) for c, o in copies.items() if c in v and o in v]
    return np.array(sims), len(edits) - len(copies)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=BENCH)
    ap.add_argument("--dev", type=Path, help="a make_transformed.py output")
    ap.add_argument("--hard", type=Path, help="a benchmarks/make_hard.py output")
    ap.add_argument("--model", default="sscd_disc_mixup")
    ap.add_argument("--budget", type=float, default=0.01, help="false matches per query (the server's default)")
    args = ap.parse_args()
    spec = load_spec(args.model)
    columns = {"other views": view_pairs(args.bench, args.model)}
    for label, root in (("dev copies", args.dev), ("hard copies", args.hard)):
        if root is not None:
            columns[label], left_out = copy_pairs(root, args.model)
            if left_out:
                print(f"{label}: {left_out} composites left out (the pasted photo is part of another picture)")
    print(f"{platform.processor() or platform.machine()}, model {args.model}; pairs: " + ", ".join(f"{k} {len(v):,}" for k, v in columns.items()))
    tail = spec.search.tail
    head = "   t  " + "".join(f"{k:>13}" for k in columns) + ("   unrelated p(t)  images at the budget" if tail else "")
    print(head)
    for t in THRESHOLDS:
        row = f"{t:5.3g} " + "".join(f"{(v >= t).mean():13.3f}" for v in columns.values())
        if tail is not None:
            p = tail.p(t)
            row += f"   {p:14.2e}  {args.budget / p:>19,.0f}"
        print(row)
    views = columns["other views"]
    print(f"other views: median {np.median(views):.3f}, max {views.max():.3f}")
    if spec.search.kinds is not None:
        k = spec.search.kinds
        print(f"the spec's [search.kinds]: copy_similarity {k.copy_similarity}, near_duplicate_threshold {k.near_duplicate_threshold}")


if __name__ == "__main__":
    main()
