"""Score normalisation at a million: does it keep more hard copies above the operating point?

    .venv/bin/python benchmarks/normalise.py --hard DIR [--bench ../shared/dedup-bench] [--boot 20]

The operating point (README, "Precision at a million") raises the threshold with the number of
stored images until the unrelated-pair tail expects at most 0.01 false matches per query: 0.65
at 1M, 0.84 at 10M by the plain-cosine fit, where most hard copies score lower. The SSCD paper's
similarity normalisation subtracts from a pair's cosine beta times the similarity of each side's
k-th nearest neighbour in a background set of unrelated photos (here the mean of the two sides'
terms; or the query's term alone, which is a threshold of each query's own and needs no term
kept per stored image): a photo that scores high against everything is taken down, a copy of a
photo unlike anything else is not. What matters at size is how the unrelated tail and the copies' scores move
together, so this measures, for plain cosine and for each normalisation:

- the unrelated tail: every pair among the tail photos, and every tail photo with every image
  of the hard set (`benchmarks/make_hard.py`'s DISC21-style copies; its photos are not used
  anywhere else here), a generalized Pareto fit above the 99.9th percentile, as tail.py does;
- from that fit the threshold with <= 0.01 false matches per query at 15k, 1M and 10M stored images;
- the share of the hard set's copies whose best score with an image of their own group (the
  photo or another copy of it) reaches that threshold, per family at 1M: a copy that reaches it
  joins its group's cluster;
- a bootstrap (`--boot` resamples, fitted again) for the 1M share's spread, resampling both
  the tail photos and the hard set's groups (a photo with its copies): the fit's shape
  parameter decides the extrapolation and moves between samples. k and beta are chosen on
  these same data, so read the spread as a lower bound.

The dev originals that the hard set was not made from are split at random (`--seed`) into the
background and the tail photos, so no photo is both. Other backgrounds are compared: fewer dev
photos, the 16 photos scikit-image ships, and a random sample of the hard set itself (what a
server drawing its background from its own store would get: copies of the queries).
UKBench views of one object are never an unrelated pair, nor each other's background.
Offline and on whole images: the server's extra views (a screenshot's content, a pasted inset)
are not in it, so pastes and screenshots score as whole images do (near nothing at 1M).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _server import machine  # noqa: E402
from tail import NS, Tail, _n, cached_embeddings, group_of, photos  # noqa: E402

SOURCES = ("imagenet-sample", "bsds500", "ukbench")  # make_hard.py names a copy "<source>-<file stem>__<family>.<ext>"
RATE = 0.01  # false matches per query, as the server's operating point


def found(best: np.ndarray, tail: Tail, n: int) -> tuple[float, float]:
    """The similarity that keeps RATE at n stored images, and the share of copies reaching it
    (none where no similarity up to 1 keeps it)."""
    t = tail.threshold_for(RATE, n)
    return (math.inf, 0.0) if t is None else (t, float(np.mean(best >= t)))


def hard_group(file: str) -> str:
    """The dev-set group (tail.py's group_of) of the photo a hard-set image was made from."""
    stem = file.split("__")[0].rsplit(".", 1)[0]
    source = next(s for s in SOURCES if stem.startswith(s + "-"))
    return group_of(f"{source}/{stem[len(source) + 1:]}.jpg")


def dev_stem(name: str) -> str:
    return name.replace("/", "-", 1).rsplit(".", 1)[0]


class Setup:
    """Embeddings and index arrays shared by every variant."""

    def __init__(self, dev_names, dev_vectors, hard_names, hard_vectors, truth, seed: int):
        hard_stems = {n.split("__")[0].rsplit(".", 1)[0] for n in hard_names}
        groups = np.array([group_of(n) for n in dev_names])
        free = np.array([i for i, n in enumerate(dev_names) if dev_stem(n) not in hard_stems and not n.startswith("skimage/")])
        np.random.default_rng(seed).shuffle(free)
        half = len(free) // 2
        self.background, self.background_groups = dev_vectors[free[:half]], groups[free[:half]]
        tail_idx = free[half:]
        self.tail, self.tail_groups = dev_vectors[tail_idx], groups[tail_idx]
        self.hard, self.hard_groups = hard_vectors, np.array([hard_group(n) for n in hard_names])
        self.n_made_from = len(hard_stems & {dev_stem(n) for n in dev_names})
        index = {n: i for i, n in enumerate(hard_names)}
        self.copies, self.families, copy_group, self.members = [], [], [], []
        for g, (photo, copies) in enumerate(truth.items()):
            members = [index[photo]] + [index[c] for c in copies]
            self.members.append(np.array(members))
            for c in copies:
                self.copies.append((index[c], [m for m in members if m != index[c]]))
                self.families.append(c.rsplit("__", 1)[1].rsplit(".", 1)[0])
                copy_group.append(g)
        self.families = np.array(self.families)
        self.copies_of = [np.flatnonzero(np.array(copy_group) == g) for g in range(len(self.members))]
        self.hard_sims = self.hard @ self.hard.T
        self.tail_hard = self.tail @ self.hard.T
        self.tail_tail = self.tail @ self.tail.T

    def kth(self, x: np.ndarray, x_ids: np.ndarray, k: int, background: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Each row's k-th highest similarity among the background's photos, those with its own id
        (its UKBench object, or itself) left out."""
        vectors, ids = background
        s = x @ vectors.T
        s[x_ids[:, None] == ids[None, :]] = -1.0
        return np.sort(s, axis=1)[:, -k]

    def backgrounds(self, skimage: np.ndarray, skimage_groups: np.ndarray, seed: int) -> dict:
        """name -> (vectors, ids, the ids hard-set rows are compared by)."""
        out = {f"{n} dev photos": (self.background[:n], self.background_groups[:n], self.hard_groups)
               for n in (len(self.background), 300, 150, 50)}
        out[f"scikit-image's {len(skimage)}"] = (skimage, skimage_groups, self.hard_groups)
        # A random sample of the collection itself, as a server could draw from its own store:
        # it holds copies of the queries (each photo of the hard set has 14 of them).
        own = np.array([f"hard:{i}" for i in range(len(self.hard))])
        pick = np.random.default_rng(seed).choice(len(self.hard), 600, replace=False)
        out["600 of the hard set itself"] = (self.hard[pick], own[pick], own)
        return out

    def prepare(self, k: int, beta: float, background=None, side: str = "both") -> tuple:
        """The terms of every tail photo and hard image, and each hard copy's best score with its
        group, normalised against `background`: by the mean of the two sides' terms (`side`
        "both"), or by the query's term alone, the query being the copy ("copy") or the other
        member of its group ("photo")."""
        if k:
            vectors, ids, hard_ids = background
            t_term = self.kth(self.tail, self.tail_groups, k, (vectors, ids))
            h_term = self.kth(self.hard, hard_ids, k, (vectors, ids))
        else:
            t_term, h_term = np.zeros(len(self.tail)), np.zeros(len(self.hard))
        if side == "both":
            hh = self.hard_sims - beta * (h_term[:, None] + h_term[None, :]) / 2
        else:
            hh = self.hard_sims - beta * (h_term[:, None] if side == "copy" else h_term[None, :])
        best = np.array([hh[i, members].max() for i, members in self.copies])
        return beta, side, t_term, h_term, best

    def fit(self, prepared: tuple, rows: np.ndarray | None = None, groups: np.ndarray | None = None) -> tuple[Tail, np.ndarray]:
        """The tail fit of the unrelated pairs among the tail photos `rows` and with the hard
        set's groups `groups` (all of each by default; a bootstrap repeats some, leaves others
        out), and the best scores of those groups' copies. With the query's term alone an
        unrelated pair counts once each way."""
        beta, side, t_term, h_term, best = prepared
        rows = np.arange(len(self.tail)) if rows is None else rows
        groups = np.arange(len(self.members)) if groups is None else groups
        cols = np.concatenate([self.members[g] for g in groups])
        tg, hg, t, h = self.tail_groups[rows], self.hard_groups[cols], t_term[rows], h_term[cols]
        tt = self.tail_tail[np.ix_(rows, rows)]
        th = self.tail_hard[np.ix_(rows, cols)]
        unrelated_th = tg[:, None] != hg[None, :]
        if side == "both":
            iu = np.triu_indices(len(rows), 1)
            tt = (tt - beta * (t[:, None] + t[None, :]) / 2)[iu][tg[iu[0]] != tg[iu[1]]]
            th = (th - beta * (t[:, None] + h[None, :]) / 2)[unrelated_th]
        else:  # row i as the query: its own term; the pairs both ways
            tt = (tt - beta * t[:, None])[tg[:, None] != tg[None, :]]
            th = np.concatenate([(th - beta * t[:, None])[unrelated_th], (th - beta * h[None, :])[unrelated_th]])
        tail = Tail(np.concatenate([tt, th]), 0.999)
        return tail, best[np.concatenate([self.copies_of[g] for g in groups])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hard", type=Path, required=True, help="a set made by benchmarks/make_hard.py")
    p.add_argument("--bench", type=Path, default=HERE.parent.parent / "shared" / "dedup-bench")
    p.add_argument("--model", default="sscd_disc_mixup")
    p.add_argument("--seed", type=int, default=0, help="the background / tail split")
    p.add_argument("--boot", type=int, default=20, help="bootstrap resamples of the tail photos (0: none)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "imgdedup-bench")
    args = p.parse_args()

    readers = photos(args.bench)
    dev_names, dev_vectors = cached_embeddings(args.cache / "tail-embeddings.npz", list(readers), lambda n: readers[n](), args.model)
    truth = json.loads((args.hard / "ground_truth.json").read_text())
    files = sorted(f.name for f in (args.hard / "images").iterdir())
    hard_names, hard_vectors = cached_embeddings(args.cache / f"normalise-{args.model}-{args.hard.resolve().name}.npz", files,
                                                 lambda n: (args.hard / "images" / n).read_bytes(), args.model)
    s = Setup(dev_names, dev_vectors, hard_names, hard_vectors, truth, args.seed)

    print(f"machine: {machine()}")
    print(f"model {args.model}; hard set {args.hard} ({len(hard_names)} images, {len(s.copies)} copies of {len(truth)} photos, "
          f"made from {s.n_made_from} dev photos); background {len(s.background)} other dev photos, tail {len(s.tail)} photos "
          f"(seed {args.seed}); threshold: <= {RATE} false matches per query, fit above the 99.9th percentile")
    print()
    print(f"{'scores':<44} {'shape':>6} " + " ".join(f"{'thr/found @' + _n(n):>17}" for n in NS)
          + (f" {'@1M boot: 5-50-95 %':>20} {'minus plain: 5-50-95 %':>24} {'> 0':>5}" if args.boot else ""))
    sk = [i for i, n in enumerate(dev_names) if n.startswith("skimage/")]
    bgs = s.backgrounds(dev_vectors[sk], np.array([dev_names[i] for i in sk]), args.seed)
    full = next(iter(bgs))
    variants = [("plain cosine", 0, 0.0, None, "both")]
    variants += [(f"k {k}, beta {b}, {full}", k, b, bgs[full], "both") for k in (1, 2, 3) for b in (0.5, 1.0)]
    variants += [(f"k 1, beta 1.0, {name}", 1, 1.0, bg, "both") for name, bg in bgs.items() if name != full]
    variants += [(f"k 3, beta 1.0, {name}", 3, 1.0, bgs[name], "both") for name in bgs if "itself" in name]
    # The query's term alone: a threshold of the query's own, no term kept per stored image.
    variants += [(f"query side, k {k}, beta 1.0, {who} as query", k, 1.0, bgs[full], who) for k in (1, 2) for who in ("copy", "photo")]
    rng = np.random.default_rng(args.seed)
    # Both ways: the tail photos, and the hard set's groups (a photo with all its copies).
    boots = [(rng.integers(0, len(s.tail), len(s.tail)), rng.integers(0, len(s.members), len(s.members))) for _ in range(args.boot)]
    found_1m, plain_boot = {}, None
    for label, k, beta, background, side in variants:
        prepared = s.prepare(k, beta, background, side)
        tail, best = s.fit(prepared)
        cells = [f"{t:.3f} / {share:.3f}" for t, share in (found(best, tail, n) for n in NS)]
        line = f"{label:<44} {tail.shape:>6.3f} " + " ".join(f"{c:>17}" for c in cells)
        if boots:
            shares = []
            for rows, groups in boots:
                bt, bb = s.fit(prepared, rows, groups)
                shares.append(found(bb, bt, 1_000_000)[1])
            shares = np.array(shares)
            plain_boot = shares if plain_boot is None else plain_boot
            lo, mid, hi = np.percentile(shares, [5, 50, 95])
            line += f" {lo:>8.3f} {mid:.3f} {hi:.3f}"
            if k:  # the same resamples: the gain over plain cosine, paired, and how often it is one
                gain = shares - plain_boot
                lo, mid, hi = np.percentile(gain, [5, 50, 95])
                line += f" {lo:>+12.3f} {mid:+.3f} {hi:+.3f}  {np.mean(gain > 0):>4.0%}"
        print(line, flush=True)
        found_1m[label] = {f: found(best[s.families == f], tail, 1_000_000)[1] for f in sorted(set(s.families))}
    print()
    print("copies found at the 1M threshold, per family:")
    families = sorted(set(s.families))
    print(f"{'scores':<44} " + " ".join(f"{f[:8]:>8}" for f in families))
    for label, shares in found_1m.items():
        print(f"{label:<44} " + " ".join(f"{shares[f]:>8.2f}" for f in families))


if __name__ == "__main__":
    main()
