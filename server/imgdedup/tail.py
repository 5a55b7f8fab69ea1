"""`dedup tail DIR`: how often do two unrelated photos of *your* collection score above t?

The server's threshold rises with a namespace's stored images so that a query meets at most
`false_matches_per_query` unrelated images on average (docs/matching.md, "The operating point").
It reads p(t), the share of unrelated pairs scoring >= t, from the model spec's `[search.tail]`:
a generalized Pareto tail fitted to pairs of diverse photos (one ImageNet photo per class). A
collection of similar things (a marketplace's listings, one shop's products) has a heavier tail,
and then the operating point lets more false matches through than it promises.

DIR (one or more) holds photos of your own kind that are unrelated to each other: no copies,
and no other shots of one scene (the default match mode matches those: they are not the tail).
Every image under it is embedded locally as the server would (nothing is sent to or stored in a
server) and every pair is scored. Pairs at or above the model's copy similarity are taken for
copies and left out; the pairs between the model's threshold and that are listed: if they are
shots of one scene, take one of each out and run again, as they would make the tail heavier
than it is. The pairs above a high quantile are fitted with a generalized Pareto tail (peaks over
threshold), as benchmarks/tail.py fits the spec's. Printed: the table of false matches per query
against N stored images, the threshold that keeps them at the server's budget for 15k, 1M and
10M images with this fit and with the spec's, and the `[search.tail]` block. `--spec-out FILE`
writes the model's spec with this tail: serve with `--model FILE`. A million pairs (~1,400
photos) make a usable fit above the 99.9th percentile; with fewer, lower `--quantile` and read
the result as rough.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from imgdedup.calibrate import embed_named
from imgdedup.runtime import load_spec
from imgdedup.runtime.spec import TailFit

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
SIZES = (15_000, 1_000_000, 10_000_000)
THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80)
MIN_OVER = 50  # pairs above the quantile the fit needs at least
COPY_SIMILARITY = 0.85  # a spec without [search.kinds]: pairs at or above are taken for copies


class Tail:
    """p(t) for unrelated pairs: counted where pairs reach t, beyond from a generalized Pareto
    tail fitted above a quantile (the spec's TailFit: the server extrapolates with its formula)."""

    def __init__(self, sims: np.ndarray, quantile: float):
        try:
            from scipy.stats import genpareto
        except ImportError as e:  # not a server dependency: pip install scipy (the calibrate extra)
            raise SystemExit("fitting a tail needs scipy: pip install 'imgdedup[calibrate]' (or scipy)") from e
        self.sims = np.sort(np.asarray(sims, dtype=np.float64))
        self.quantile = quantile
        self.u = float(np.quantile(self.sims, quantile))
        over = self.sims[self.sims > self.u] - self.u
        self.n_over = len(over)
        if self.n_over < 2:
            raise ValueError(f"{len(self.sims)} pairs leave {self.n_over} above the {quantile} quantile: nothing to fit")
        self.share_above = self.n_over / len(self.sims)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.shape, _, self.scale = (float(v) for v in genpareto.fit(over, floc=0))
        self.fit = TailFit(u=self.u, share_above=self.share_above, shape=self.shape, scale=self.scale)

    @property
    def endpoint(self) -> float:
        """The highest similarity the fit allows (a negative shape bounds it)."""
        return self.u - self.scale / self.shape if self.shape < 0 else math.inf

    def counted(self, t: float) -> int:
        return int(len(self.sims) - np.searchsorted(self.sims, t, side="left"))

    def p(self, t: float) -> float:
        return self.counted(t) / len(self.sims) if t <= self.u else self.fit.p(t)

    def threshold_for(self, rate: float, n: int) -> float:
        """The smallest t with n * p(t) <= rate (bisection: p falls as t rises)."""
        lo, hi = float(self.sims[0]), 1.0
        if n * self.p(lo) <= rate:
            return lo
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if n * self.p(mid) <= rate else (mid, hi)
        return hi


def threshold_for(fit: TailFit, rate: float, n: int) -> float:
    """What the server's operating point does with a spec's tail (before its 0.005 steps and
    the base it never goes under): the smallest t above the fit's u with n * p(t) <= rate."""
    return fit.threshold_for(rate / n)


def tail_block(tail: Tail, measured_on: str) -> str:
    return (f"[search.tail]\nu = {tail.u:.5f}\nshare_above = {tail.share_above:.6f}\nshape = {tail.shape:.4f}\n"
            f"scale = {tail.scale:.5f}\nmeasured_on = {json.dumps(measured_on)}\n")


def spec_with_tail(spec_text: str, block: str) -> str:
    """The spec's TOML with its [search.tail] table replaced by `block` (added if it has none)."""
    table = re.compile(r"^\[search\.tail\][^\n]*\n(?:(?!\[)[^\n]*\n?)*", re.MULTILINE)
    if table.search(spec_text):
        return table.sub(lambda _: block + "\n", spec_text, count=1)
    return spec_text.rstrip("\n") + "\n\n" + block


def _pairs(names: list[str], iu: tuple[np.ndarray, np.ndarray], sims: np.ndarray, which: np.ndarray, most: int = 20) -> None:
    for k in which[np.argsort(-sims[which])][:most]:
        print(f"  {names[iu[0][k]]} ~ {names[iu[1][k]]} {sims[k]:.3f}")
    if len(which) > most:
        print(f"  ... {len(which) - most} more")


def _n(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dedup tail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, nargs="+", help="folders of unrelated photos of your collection's kind (read recursively)")
    parser.add_argument("--model", default="sscd_disc_mixup", help="built-in model name or spec file")
    parser.add_argument("--quantile", type=float, default=0.999, help="fit the pairs above this quantile (default 0.999)")
    parser.add_argument("--rate", type=float, default=0.01, help="false matches per query to plan for (the server's false_matches_per_query)")
    parser.add_argument("--spec-out", type=Path, help="write the model's spec with this tail here")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--max-pixels", type=int, default=60_000_000)
    args = parser.parse_args(argv)
    if not 0.5 <= args.quantile < 1:
        parser.error("--quantile must be in [0.5, 1)")

    spec = load_spec(args.model)
    paths = {str(p): p for d in args.dir for p in sorted(d.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    kept, vectors, failed = embed_named(list(paths), lambda n: paths[n].read_bytes(), args.model, max_pixels=args.max_pixels)
    if failed:
        print(f"{len(failed)} images could not be decoded and are left out, e.g. {failed[:3]}")
    if len(kept) < 3:
        print(f"{len(kept)} photos; a tail needs many (~1,400 for a million pairs)", file=sys.stderr)
        return 2

    copy_at = spec.search.kinds.copy_similarity if spec.search.kinds is not None else COPY_SIMILARITY
    iu = np.triu_indices(len(kept), k=1)
    sims = (vectors @ vectors.T)[iu]
    copies = np.flatnonzero(sims >= copy_at)
    unrelated = np.delete(sims, copies)
    try:
        tail = Tail(unrelated, args.quantile)
    except ValueError as e:
        print(f"{e}; give more photos or a lower --quantile", file=sys.stderr)
        return 2

    print(f"model {spec.name}; {len(kept)} photos, {len(unrelated):,} pairs "
          f"(mean {unrelated.mean():.3f}, sd {unrelated.std():.3f}, most similar {unrelated.max():.3f})")
    if len(copies):
        print(f"{len(copies)} pairs at or above {copy_at} taken for copies and left out:")
        _pairs(kept, iu, sims, copies)
    matches = np.flatnonzero((sims >= spec.search.default_threshold) & (sims < copy_at))
    if len(matches):
        print(f"{len(matches)} pairs between the model's threshold ({spec.search.default_threshold}) and {copy_at}: "
              "if they are shots of one scene, take one of each out and run again:")
        _pairs(kept, iu, sims, matches)
    warn = "" if tail.n_over >= MIN_OVER else f" (only {tail.n_over} pairs above it: a rough fit; more photos make it firmer)"
    print(f"fit above the {args.quantile:g} quantile ({tail.u:.3f}, {tail.n_over} pairs): shape {tail.shape:.3f}, scale {tail.scale:.4f}{warn}")
    print()
    print(f"{'t':>5} {'pairs >= t':>10} {'p(t)':>9} " + " ".join(f"{'false/q @' + _n(n):>13}" for n in SIZES))
    for t in THRESHOLDS:
        pt = tail.p(t)
        print(f"{t:>5.2f} {tail.counted(t):>10} {pt:>9.2e} " + " ".join(f"{n * pt:>13.3g}" for n in SIZES))
    print()
    ours = {n: tail.threshold_for(args.rate, n) for n in SIZES}
    print(f"threshold for <= {args.rate:g} false matches per query, this fit: "
          + ", ".join(f"{_n(n)} {t:.3f}" for n, t in ours.items()))
    theirs = {n: threshold_for(spec.search.tail, args.rate, n) for n in SIZES} if spec.search.tail is not None else {}
    if theirs:
        print(f"  the spec's tail ({spec.search.tail.measured_on or 'no source given'}): "
              + ", ".join(f"{_n(n)} {t:.3f}" for n, t in theirs.items()))
        heavier = [n for n in SIZES if ours[n] > theirs[n] + 0.005]
        if heavier:
            print(f"  your photos' tail is heavier: with the spec's tail a query against {_n(heavier[0])} stored images "
                  f"would meet {heavier[0] * tail.p(theirs[heavier[0]]):.3g} unrelated ones, not {args.rate:g}")
    measured_on = f"dedup tail: {len(kept)} photos, {len(unrelated):,} unrelated pairs, fit above the {args.quantile:g} quantile"
    block = tail_block(tail, measured_on)
    print()
    print(block, end="")
    if args.spec_out:
        relative = spec.source.path is not None and not spec.source.path.is_absolute()
        if relative and args.spec_out.resolve().parent != spec.base_dir:
            print(f"{args.model} names its model file relative to its own folder: write --spec-out there", file=sys.stderr)
            return 2
        text = Path(args.model).read_text() if spec.base_dir is not None else _builtin_text(args.model)
        args.spec_out.write_text(spec_with_tail(text, block))
        print(f"\nwrote {args.spec_out}: serve with --model {args.spec_out}")
    if args.json:
        args.json.write_text(json.dumps({
            "photos": len(kept), "pairs": int(len(unrelated)), "copies_left_out": int(len(copies)),
            "tail": tail.fit.model_dump(exclude={"measured_on"}), "n_over": tail.n_over, "quantile": args.quantile,
            "thresholds": {str(n): t for n, t in ours.items()}, "spec_thresholds": {str(n): t for n, t in theirs.items()},
        }, indent=2))
    return 0


def _builtin_text(name: str) -> str:
    import importlib.resources

    return (importlib.resources.files("imgdedup.model_specs") / f"{name}.toml").read_text()
