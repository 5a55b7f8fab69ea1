"""`dedup calibrate DIR`: choose a duplicate threshold from a labelled folder.

DIR holds `images/` and `ground_truth.json` ({"<original>": ["<copy>", ...]}; a key and its list
form one group), optionally `edits.json` ({"<copy>": {"edit": ...}}) for recall per edit: the
format of ../shared/dedup-bench. The images are embedded locally with the same preprocessing and
model spec as the server (nothing is sent to, or stored in, a running server); each image's
nearest neighbours are scored, and clusters (connected components of "similarity >= t") are
compared with the groups for every threshold t. Prints the precision / recall curve, the
smallest threshold that keeps precision at the target, and recall per edit; writes a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from imgdedup.core.images import ImageError, decode_image, preprocess
from imgdedup.evaluation import Dataset, load_dataset, sweep
from imgdedup.runtime import create_embedder, load_spec

FLOOR = 0.30  # pairs below this similarity are never duplicates for SSCD-like models
NEIGHBOURS = 20


def embed_dataset(data: Dataset, model: str, *, max_pixels: int, batch: int = 16) -> tuple[list[str], np.ndarray, list[str]]:
    """(names, L2-normalised embeddings, names that failed to decode)."""
    return embed_named(data.names, lambda name: (data.folder / "images" / name).read_bytes(), model, max_pixels=max_pixels, batch=batch)


def embed_named(names: list[str], read: Callable[[str], bytes], model: str, *, max_pixels: int, batch: int = 16) -> tuple[list[str], np.ndarray, list[str]]:
    """Embed the encoded images `read(name)` gives, as the server would (its decoding,
    preprocessing and model): (names kept, L2-normalised embeddings, names that failed)."""
    spec = load_spec(model)
    embedder = create_embedder(spec)
    failed: list[str] = []

    def prepare(name: str) -> np.ndarray | None:
        try:
            raw = read(name)
            return preprocess(decode_image(raw, max_pixels=max_pixels, target_size=spec.input_size), spec.input.resize)
        except (ImageError, OSError):
            return None

    kept, vectors = [], []
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(names), batch):
            chunk = names[start: start + batch]
            tensors = list(pool.map(prepare, chunk))
            ok = [(n, t) for n, t in zip(chunk, tensors) if t is not None]
            failed += [n for n, t in zip(chunk, tensors) if t is None]
            by_shape: dict[tuple, list] = {}
            for n, t in ok:
                by_shape.setdefault(t.shape, []).append((n, t))
            for group in by_shape.values():
                vectors.append(embedder.embed(np.stack([t for _, t in group])))
                kept += [n for n, _ in group]
            print(f"\rembedded {start + len(chunk)}/{len(names)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return kept, np.concatenate(vectors) if vectors else np.zeros((0, spec.output.dim), np.float32), failed


def scored_pairs(names: list[str], vectors: np.ndarray, *, floor: float = FLOOR, k: int = NEIGHBOURS) -> dict[tuple[str, str], float]:
    """Each image's k nearest neighbours with similarity >= floor, as undirected pairs."""
    edges: dict[tuple[str, str], float] = {}
    k = min(k, len(names) - 1)
    for start in range(0, len(names), 1024):
        sims = vectors[start: start + 1024] @ vectors.T
        for row, i in enumerate(range(start, min(start + 1024, len(names)))):
            sims[row, i] = -1.0  # not its own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k] if k > 0 else np.zeros((len(sims), 0), int)
        for row, js in enumerate(top):
            i = start + row
            for j in js:
                s = float(sims[row, j])
                if s >= floor:
                    a, b = (names[i], names[j]) if names[i] < names[j] else (names[j], names[i])
                    edges[(a, b)] = s
    return edges


def plot(rows: list[dict], path: Path, chosen: float | None, default: float, title: str) -> None:
    """Precision and recall against threshold, drawn with OpenCV (no plotting dependency)."""
    w, h, m = 900, 560, 70
    img = np.full((h, w, 3), 255, np.uint8)
    t_lo, t_hi = min(r["threshold"] for r in rows), max(r["threshold"] for r in rows)
    y_lo = max(0.0, min(min(r["precision"], r["recall"]) for r in rows) - 0.05)

    def xy(t: float, v: float) -> tuple[int, int]:
        x = m + (t - t_lo) / max(t_hi - t_lo, 1e-9) * (w - 2 * m)
        y = h - m - (v - y_lo) / max(1.0 - y_lo, 1e-9) * (h - 2 * m)
        return int(round(x)), int(round(y))

    grey, font = (200, 200, 200), cv2.FONT_HERSHEY_SIMPLEX
    for i in range(6):
        v = y_lo + (1 - y_lo) * i / 5
        cv2.line(img, xy(t_lo, v), xy(t_hi, v), grey, 1)
        cv2.putText(img, f"{v:.2f}", (8, xy(t_lo, v)[1] + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(11):
        t = t_lo + (t_hi - t_lo) * i / 10
        cv2.line(img, xy(t, y_lo), xy(t, 1.0), grey, 1)
        cv2.putText(img, f"{t:.2f}", (xy(t, y_lo)[0] - 16, h - m + 22), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, xy(t_lo, 1.0), xy(t_hi, y_lo), (0, 0, 0), 1)
    for key, colour in (("precision", (200, 80, 0)), ("recall", (0, 0, 210)), ("f1", (0, 150, 0))):
        pts = np.array([xy(r["threshold"], r[key]) for r in rows], np.int32)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
    for t, colour, label in ((default, (120, 120, 120), "model default"), (chosen, (0, 0, 0), "chosen")):
        if t is not None and t_lo <= t <= t_hi:
            cv2.line(img, xy(t, y_lo), xy(t, 1.0), colour, 1, cv2.LINE_AA)
            cv2.putText(img, f"{label} {t:.3f}", (xy(t, 1.0)[0] + 4, m + 40 if label == "chosen" else m + 60), font, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(img, title, (m, 30), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (label, colour) in enumerate((("precision", (200, 80, 0)), ("recall", (0, 0, 210)), ("F1", (0, 150, 0)))):
        cv2.putText(img, label, (w - m - 260 + 90 * i, 30), font, 0.55, colour, 2, cv2.LINE_AA)
    cv2.putText(img, "cosine similarity threshold", (w // 2 - 110, h - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dedup calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--model", default="sscd_disc_mixup", help="built-in model name or spec file")
    parser.add_argument("--target-precision", type=float, default=0.995)
    parser.add_argument("--limit-groups", type=int, help="a seeded random subset of the groups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("calibration.png"))
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--max-pixels", type=int, default=60_000_000)
    args = parser.parse_args(argv)

    data = load_dataset(args.dir, args.limit_groups, args.seed)
    spec = load_spec(args.model)
    t0 = time.perf_counter()
    names, vectors, failed = embed_dataset(data, args.model, max_pixels=args.max_pixels)
    elapsed = time.perf_counter() - t0
    if failed:
        print(f"{len(failed)} images could not be decoded and count as singletons, e.g. {failed[:3]}")
    edges = scored_pairs(names, vectors)
    thresholds = [round(FLOOR + 0.01 * i, 2) for i in range(int(round((0.99 - FLOOR) / 0.01)) + 1)]
    default = spec.search.default_threshold
    result = sweep(edges, data, sorted({*thresholds, default}), args.target_precision, default, FLOOR)
    rows, safe = result["rows"], result["safe"]

    print(f"{len(names)} images in {len(set(data.group_of.values()))} groups, model {spec.name}, "
          f"embedded in {elapsed:.0f} s ({len(names) / max(elapsed, 1e-9):.1f} img/s)")
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>7} {'copy rec':>8}")
    for r in rows:
        if round(r["threshold"] * 100) % 5 == 0 or r["threshold"] == default:
            mark = "  <- model default" if r["threshold"] == default else ""
            print(f"{r['threshold']:9.2f} {r['precision']:9.4f} {r['recall']:7.4f} {r['f1']:7.4f} {r['copy_recall'] or 0:8.4f}{mark}")
    chosen = safe["threshold"]
    if chosen is None:
        print(f"no threshold reaches precision {args.target_precision}")
    else:
        print(f"\nthreshold for precision >= {args.target_precision} (at it and every higher threshold): {chosen:.4f}"
              f"  -> precision {safe['precision']:.4f} recall {safe['recall']:.4f} F1 {safe['f1']:.4f}")
        if safe["first_failing_similarity"] is not None:
            print(f"  the first wrong pair appears at similarity {safe['first_failing_similarity']:.4f}")
    at_chosen = min(rows, key=lambda r: abs(r["threshold"] - (chosen if chosen is not None else default)))
    by_edit_default = next(r for r in rows if r["threshold"] == default)["copy_recall_by_edit"]
    if by_edit_default:
        print(f"\nrecall per edit (copy in its original's cluster): at {default:.2f} (default) / at {at_chosen['threshold']:.2f}")
        for e, v in by_edit_default.items():
            print(f"  {e:<10} {v:6.3f} / {at_chosen['copy_recall_by_edit'].get(e, float('nan')):6.3f}")
    plot(rows, args.plot, chosen, default, f"{spec.name} on {args.dir.name}: {len(names)} images")
    print(f"\nplot written to {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "safe": safe, "model": spec.name, "images": len(names), "failed": failed}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
