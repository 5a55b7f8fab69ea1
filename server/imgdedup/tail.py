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
the result as rough (the spec is then written only with `--force`, as it is where no threshold
keeps the budget at some size: the server would match next to nothing there).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np

from imgdedup.calibrate import embed_named
from imgdedup.core.images import image_files
from imgdedup.core.normalise import COPY_SIMILARITY, Normaliser, kth_similarity
from imgdedup.core.operating_point import OperatingPoint
from imgdedup.runtime.spec import ModelSpec, TailFit, parse_spec, spec_text

SIZES = (15_000, 1_000_000, 10_000_000)
THRESHOLDS = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80)
MIN_OVER = 50  # pairs above the quantile a fit should rest on


class Tail:
    """p(t) for unrelated pairs: counted where pairs reach t, beyond from a generalized Pareto
    tail fitted above a quantile (the spec's TailFit: the server extrapolates with its formula)."""

    def __init__(self, sims: np.ndarray, quantile: float):
        try:
            from scipy.stats import genpareto
        except ImportError as e:  # not a server dependency
            raise SystemExit("fitting a tail needs scipy: pip install 'imgdedup[tail]' (or scipy)") from e
        self.sims = np.sort(np.asarray(sims, dtype=np.float64))
        if len(self.sims) == 0:
            raise ValueError("no pairs")
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
        """The measured pairs scoring >= t."""
        return int(len(self.sims) - np.searchsorted(self.sims, t, side="left"))

    def p(self, t: float) -> float:
        return self.counted(t) / len(self.sims) if t <= self.u else self.fit.p(t)

    def threshold_for(self, rate: float, n: int) -> float | None:
        """The smallest t with n * p(t) <= rate (bisection: p falls as t rises); None where not
        even a similarity of 1 keeps it (the fit's tail is that heavy)."""
        lo, hi = float(self.sims[0]), 1.0
        if n * self.p(lo) <= rate:
            return lo
        if n * self.p(hi) > rate:
            return None
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if n * self.p(mid) <= rate else (mid, hi)
        return hi


def tail_block(tail: Tail, measured_on: str, table: str = "search.tail") -> str:
    """The [search.tail] table a spec keeps (TailFit's fields), or the same under `table`."""
    return (f"[{table}]\nu = {tail.u:.5f}\nshare_above = {tail.share_above:.6g}\nshape = {tail.shape:.4f}\n"
            f"scale = {tail.scale:.5f}\nmeasured_on = {json.dumps(measured_on)}\n")


def normalise_block(background: str, k: int, beta: float, typical_term: float, tail: Tail, measured_on: str) -> str:
    """The [search.normalise] table (NormaliseSpec's fields) with its tail."""
    return (f"[search.normalise]\nbackground = {json.dumps(background)}\nk = {k}\nbeta = {beta:g}\n"
            f"typical_term = {typical_term:.5f}\nmeasured_on = {json.dumps(measured_on)}\n\n"
            + tail_block(tail, measured_on, "search.normalise.tail"))


def spec_with_tail(text: str, block: str, base_dir: Path | None = None) -> str:
    """The spec's TOML with its [search.tail] table replaced by `block`: spec_with."""
    return spec_with(text, {"tail": block}, base_dir)


def spec_with(text: str, blocks: dict[str, str], base_dir: Path | None = None) -> str:
    """The spec's TOML with its [search.NAME] tables (their sub-tables too) replaced by the
    blocks (appended where it has none), comments above the next table kept; `base_dir` pins
    the folder relative model paths are read from (a spec written elsewhere). Checked: it
    parses, and differs from the original in those tables (and base_dir) only."""
    out = text
    for name, block in blocks.items():
        lines = out.splitlines(keepends=True)
        header = f"[search.{name}]"
        start = next((i for i, line in enumerate(lines) if line.strip().startswith(header)), None)
        if start is None:
            out = out.rstrip("\n") + "\n\n" + block
            continue
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i].lstrip().startswith("[") and not lines[i].lstrip().startswith(f"[search.{name}.")), len(lines))
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
            end -= 1  # the comments (and blank lines) just above the next table are that table's
        out = "".join(lines[:start]) + block + "\n" + "".join(lines[end:]).lstrip("\n")
    if base_dir is not None:
        out = f"base_dir = {json.dumps(str(base_dir))}\n" + out
    before, after = tomllib.loads(text), tomllib.loads(out)
    for data in (before, after):
        for name in blocks:
            data.get("search", {}).pop(name, None)
        data.pop("base_dir", None)
    if before != after:
        raise ValueError(f"the spec's {', '.join(f'[search.{n}]' for n in blocks)} could not be replaced on their own (write them by hand)")
    ModelSpec.model_validate(tomllib.loads(out))
    return out


def drop_copies(names: list[str], sims: np.ndarray, copy_at: float) -> tuple[list[int], list[tuple[str, str, float]]]:
    """Each image that scores >= copy_at (in `sims`, every pair's) with one kept before it is
    left out (a copy is not an unrelated photo, and its pairs would count its photo's twice):
    (the kept images' indices, (left out, its photo, similarity))."""
    keep: list[int] = []
    dropped = []
    for i in range(len(names)):
        twins = np.flatnonzero(sims[i, keep] >= copy_at) if keep else ()
        if len(twins):
            j = keep[twins[0]]
            dropped.append((names[i], names[j], float(sims[i, j])))
        else:
            keep.append(i)
    return keep, dropped


def _n(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _t(t: float | None) -> str:
    return "none <= 1" if t is None else f"{t:.3f}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dedup tail", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, nargs="+", help="folders of unrelated photos of your collection's kind (read recursively)")
    parser.add_argument("--model", default="sscd_disc_mixup", help="built-in model name or spec file")
    parser.add_argument("--quantile", type=float, default=0.999, help="fit the pairs above this quantile (default 0.999)")
    parser.add_argument("--rate", type=float, default=0.01, help="false matches per query to plan for (the server's false_matches_per_query)")
    parser.add_argument("--max-photos", type=int, default=4000, help="a seeded sample of this many if there are more (all pairs are kept in memory)")
    parser.add_argument("--spec-out", type=Path, help="write the model's spec with this tail here")
    parser.add_argument("--force", action="store_true", help="write --spec-out even from a rough fit, or one no threshold keeps at some size")
    parser.add_argument("--normalise", action="store_true",
                        help="also fit query-side score normalisation: a seeded half of the photos becomes its background, "
                             "the other half's pairs fit the normalised tail (--spec-out writes both, the background beside it)")
    parser.add_argument("--background", type=Path, nargs="+",
                        help="folders of the normalisation's background photos instead of half of DIR (implies --normalise): "
                             "unrelated to each other and to what the collection will hold")
    parser.add_argument("--k", type=int, default=1, help="normalisation: the query's term is its k-th highest similarity with the background (default 1)")
    parser.add_argument("--beta", type=float, default=1.0, help="normalisation: the term's weight (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the background half and of --boot (default 0)")
    parser.add_argument("--boot", type=int, default=0,
                        help="refit this many resamples of the photos (drawn again with replacement) and print the spread "
                             "of the server's thresholds: how much the fit moves with photos like yours (default 0: not done)")
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument("--max-pixels", type=int, default=60_000_000)
    args = parser.parse_args(argv)
    if not 0.5 <= args.quantile < 1:
        parser.error("--quantile must be in [0.5, 1)")
    if not 0 < args.rate <= 1:
        parser.error("--rate must be in (0, 1]")
    if args.k < 1 or not 0 < args.beta <= 2:
        parser.error("--k must be >= 1 and --beta in (0, 2]")
    if not 0 <= args.boot <= 1000:
        parser.error("--boot must be in 0..1000")
    args.normalise = args.normalise or bool(args.background)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    text, folder = spec_text(args.model)  # read now: a bad --model fails before the embedding
    spec = parse_spec(text, folder)
    files = [p for d in args.dir for p in image_files(d)]
    if len(files) > args.max_photos:
        files = sorted(np.random.default_rng(0).choice(files, args.max_photos, replace=False).tolist())
    names, vectors, failed = _embed(files, args)
    copy_at = spec.search.kinds.copy_similarity if spec.search.kinds is not None else COPY_SIMILARITY
    every = vectors @ vectors.T
    keep, copies = drop_copies(names, every, copy_at)
    names = [names[i] for i in keep]
    every = every[np.ix_(keep, keep)]
    iu = np.triu_indices(len(names), k=1)
    sims = every[iu]
    try:
        tail = Tail(sims, args.quantile)
    except ValueError as e:
        print(f"{len(names)} photos: {e}; give more photos or a lower --quantile", file=sys.stderr)
        return 2

    print(f"model {spec.name}; {len(names)} photos, {len(sims):,} pairs "
          f"(mean {sims.mean():.3f}, sd {sims.std():.3f}, most similar {sims.max():.3f})")
    if copies:
        print(f"{len(copies)} images left out as copies (>= {copy_at}) of another:")
        for name, twin, s in sorted(copies, key=lambda c: -c[2])[:20]:
            print(f"  {name} ~ {twin} {s:.3f}")
    base = spec.search.default_threshold
    matches = np.flatnonzero(sims >= base)
    if len(matches):
        print(f"{len(matches)} pairs at or above the model's threshold ({base}): if they are shots of one scene, "
              "take one of each out and run again:")
        for k in matches[np.argsort(-sims[matches])][:20]:
            print(f"  {names[iu[0][k]]} ~ {names[iu[1][k]]} {sims[k]:.3f}")
    rough = tail.n_over < MIN_OVER
    print(f"fit above the {args.quantile:g} quantile ({tail.u:.3f}, {tail.n_over} pairs): shape {tail.shape:.3f}, scale {tail.scale:.4f}"
          + (" (a rough fit: more photos make it firmer)" if rough else ""))
    print()
    print(f"{'t':>5} {'pairs >= t':>10} {'p(t)':>9} " + " ".join(f"{'false/q @' + _n(n):>13}" for n in SIZES))
    for t in THRESHOLDS:
        pt = tail.p(t)
        print(f"{t:>5.2f} {tail.counted(t):>10} {pt:>9.2e} " + " ".join(f"{n * pt:>13.3g}" for n in SIZES))
    print()
    fits = {n: tail.threshold_for(args.rate, n) for n in SIZES}
    print(f"similarity for <= {args.rate:g} false matches per query by this fit: " + ", ".join(f"{_n(n)} {_t(t)}" for n, t in fits.items()))
    # What the server would run at (the base under it, in its steps), with this tail and the spec's.
    ours = OperatingPoint(base, tail.fit, args.rate)
    print("the server's threshold with this tail: " + ", ".join(f"{_n(n)} {ours.threshold(n):.3f}" for n in SIZES))
    if spec.search.tail is not None:
        theirs = OperatingPoint(base, spec.search.tail, args.rate)
        print("  with the spec's tail:              " + ", ".join(f"{_n(n)} {theirs.threshold(n):.3f}" for n in SIZES)
              + f" ({spec.search.tail.measured_on or 'no source given'})")
        # Heavier where the spec's threshold would let through more than twice the budget (a
        # step of 0.005 either way is the fits' noise, not a different tail).
        heavier = next((n for n in SIZES if n * tail.p(theirs.threshold(n)) > 2 * args.rate), None)
        if heavier:
            print(f"  your photos' tail is heavier: with the spec's tail a query against {_n(heavier)} stored images "
                  f"would meet {heavier * tail.p(theirs.threshold(heavier)):.3g} unrelated ones, not {args.rate:g}")
    blocks = {"tail": tail_block(tail, f"dedup tail: {len(names)} photos, {len(sims):,} unrelated pairs, fit above the {args.quantile:g} quantile")}
    unreachable = [_n(n) for n, t in fits.items() if t is None]
    normalised = None
    if args.normalise:
        try:
            normalised = _normalise(args, names, vectors[keep], every, copy_at, ours)
        except ValueError as e:
            print(f"normalisation: {e}; give more photos or a lower --quantile", file=sys.stderr)
            return 2
        rough = rough or normalised["rough"]
        unreachable += [f"{_n(n)} (normalised)" for n, t in normalised["fits"].items() if t is None]
    resampled = _resampled(args, base, every, vectors[keep], copy_at, normalised) if args.boot else None
    print()
    print(blocks["tail"], end="")
    written = None
    if args.spec_out:
        if (rough or unreachable) and not args.force:
            why = f"no similarity keeps {args.rate:g} at {', '.join(unreachable)}" if unreachable else "too few pairs above the quantile"
            print(f"\nnot written ({why}): the server would match next to nothing at those sizes; --force writes it anyway", file=sys.stderr)
        else:
            relative = spec.source.path is not None and not spec.source.path.is_absolute()
            pin = folder if relative and args.spec_out.resolve().parent != folder else None
            args.spec_out.parent.mkdir(parents=True, exist_ok=True)
            if normalised is not None:
                background = args.spec_out.with_name(args.spec_out.stem + "-background.npy")
                np.save(background, normalised["background"])
                # Relative to the spec's folder, unless base_dir is pinned to another one.
                blocks["normalise"] = normalised["block"](str(background.resolve()) if pin else background.name)
                print(f"\nwrote {background}: the normalisation's background ({len(normalised['background'])} photos' embeddings)")
            args.spec_out.write_text(spec_with(text, blocks, pin))
            written = str(args.spec_out)
            print(f"\nwrote {args.spec_out}: serve with --model {args.spec_out}")
    if args.json:
        args.json.write_text(json.dumps({
            "photos": len(names), "pairs": int(len(sims)), "copies_left_out": len(copies), "failed": len(failed),
            "tail": tail.fit.model_dump(exclude={"measured_on"}), "n_over": tail.n_over, "quantile": args.quantile,
            "similarity_for_rate": {str(n): t for n, t in fits.items()},
            "server_threshold": {str(n): ours.threshold(n) for n in SIZES}, "spec_out": written,
            "normalise": None if normalised is None else normalised["summary"], "resampled": resampled,
        }, indent=2))
    return 0 if written or not args.spec_out else 2


def _embed(files: list[Path], args: argparse.Namespace) -> tuple[list[str], np.ndarray, list[str]]:
    paths = {str(p): p for p in files}
    names, vectors, failed = embed_named(list(paths), lambda n: paths[n].read_bytes(), args.model, max_pixels=args.max_pixels)
    if failed:
        print(f"{len(failed)} images could not be decoded and are left out, e.g. {failed[:3]}")
    return names, vectors, failed


def _normalise(args: argparse.Namespace, names: list[str], vectors: np.ndarray, every: np.ndarray,
               copy_at: float, plain: OperatingPoint) -> dict:
    """Fit query-side normalisation (core/normalise.py): the background (half of the photos, or
    --background's), the terms of the other photos, the tail of their ordered pairs' normalised
    scores (cosine - beta x the first one's term: either image may be the query)."""
    if args.background:
        bg_files = [p for d in args.background for p in image_files(d)]
        if len(bg_files) > args.max_photos:
            bg_files = sorted(np.random.default_rng(args.seed).choice(bg_files, args.max_photos, replace=False).tolist())
        _, background, _ = _embed(bg_files, args)
        queries = np.arange(len(names))
    else:
        order = np.random.default_rng(args.seed).permutation(len(names))
        half = len(names) // 2
        background, queries = vectors[np.sort(order[:half])], np.sort(order[half:])
    if len(background) <= args.k or len(queries) < 2:
        raise ValueError(f"{len(background)} background photos and {len(queries)} others: too few")
    ntail, terms, scores = _normalised_tail(args, vectors, every, background, queries, copy_at)
    typical = float(np.median(terms))
    point = OperatingPoint(plain.base, plain.tail, plain.false_matches_per_query,
                           Normaliser(background, args.k, args.beta, ntail.fit, typical, copy_at))
    fits = {n: ntail.threshold_for(args.rate, n) for n in SIZES}
    where = "--background" if args.background else f"a seeded half (--seed {args.seed})"
    measured_on = (f"dedup tail --normalise: {len(background)} background photos ({where}), {len(queries)} photos' "
                   f"{len(scores):,} ordered unrelated pairs, k {args.k}, beta {args.beta:g}, fit above the {args.quantile:g} quantile")
    low, high = (float(v) for v in np.quantile(terms, [0.1, 0.9]))
    print()
    print(f"normalisation: {len(background)} background photos ({where}), k {args.k}, beta {args.beta:g}; "
          f"the other {len(queries)} photos' terms: median {typical:.3f}, 10-90 % {low:.3f}-{high:.3f}")
    print(f"normalised scores' fit above the {args.quantile:g} quantile ({ntail.u:.3f}, {ntail.n_over} pairs): "
          f"shape {ntail.shape:.3f}, scale {ntail.scale:.4f}" + (" (a rough fit)" if ntail.n_over < MIN_OVER else ""))
    print(f"normalised score for <= {args.rate:g} false matches per query: " + ", ".join(f"{_n(n)} {_t(t)}" for n, t in fits.items()))
    thresholds = {}
    for label, term in (("a typical query (median term)", None), ("a query at the 10 % term", low), ("a query at the 90 % term", high)):
        thresholds[label] = {str(n): point.threshold(n, term) for n in SIZES}
        print(f"the server's threshold for {label}: " + ", ".join(f"{_n(n)} {point.threshold(n, term):.3f}" for n in SIZES)
              + f" (plain: {', '.join(f'{plain.threshold(n):.3f}' for n in SIZES)})")
    return {
        "background": background.astype(np.float32), "queries": queries, "fits": fits, "rough": ntail.n_over < MIN_OVER,
        "block": lambda path: normalise_block(path, args.k, args.beta, typical, ntail, measured_on),
        "summary": {"background_photos": len(background), "query_photos": int(len(queries)), "ordered_pairs": int(len(scores)),
                    "k": args.k, "beta": args.beta, "typical_term": typical, "term_10_90": [low, high],
                    "tail": ntail.fit.model_dump(exclude={"measured_on"}), "n_over": ntail.n_over,
                    "similarity_for_rate": {str(n): t for n, t in fits.items()}, "server_threshold": thresholds},
    }


def _normalised_tail(args: argparse.Namespace, vectors: np.ndarray, every: np.ndarray, background: np.ndarray,
                     queries: np.ndarray, copy_at: float) -> tuple[Tail, np.ndarray, np.ndarray]:
    """The queries' terms and the tail of their ordered pairs' normalised scores (a photo drawn
    twice by a resample is not paired with itself)."""
    terms = kth_similarity(vectors[queries], background, args.k, copy_at)
    pairs = every[np.ix_(queries, queries)] - args.beta * terms[:, None]
    scores = pairs[queries[:, None] != queries[None, :]]
    return Tail(scores, args.quantile), terms, scores


def _resampled(args: argparse.Namespace, base: float, every: np.ndarray, vectors: np.ndarray, copy_at: float,
               normalised: dict | None) -> dict:
    """The server's thresholds at SIZES from --boot resamples of the photos (and of the
    background and the queries, with --normalise), refitted: their 5th, 50th and 95th percentiles."""
    rng = np.random.default_rng(args.seed + 1)
    n = len(every)
    plain: list[list[float]] = []
    norm: list[list[float]] = []
    for _ in range(args.boot):
        idx = rng.integers(0, n, n)
        pairs = every[np.ix_(idx, idx)][np.triu(idx[:, None] != idx[None, :], 1)]
        try:
            fit = Tail(pairs, args.quantile).fit
            plain.append([OperatingPoint(base, fit, args.rate).threshold(s) for s in SIZES])
            if normalised is not None:
                background, queries = normalised["background"], normalised["queries"]
                background = background[rng.integers(0, len(background), len(background))]
                queries = queries[rng.integers(0, len(queries), len(queries))]
                ntail, terms, _ = _normalised_tail(args, vectors, every, background, queries, copy_at)
                point = OperatingPoint(base, fit, args.rate, Normaliser(background, args.k, args.beta, ntail.fit, float(np.median(terms)), copy_at))
                norm.append([point.threshold(s) for s in SIZES])
        except ValueError:  # a resample with too few distinct pairs above the quantile
            continue

    def spread(rows: list[list[float]]) -> dict[str, list[float]]:
        q = np.quantile(np.asarray(rows), [0.05, 0.5, 0.95], axis=0) if rows else np.full((3, len(SIZES)), np.nan)
        return {str(size): [round(float(v), 4) for v in q[:, i]] for i, size in enumerate(SIZES)}

    out = {"resamples": len(plain), "plain": spread(plain), "normalised": spread(norm) if normalised is not None else None}
    print()
    print(f"the server's threshold over {len(plain)} resamples of the photos, 5 / 50 / 95 %:")
    for label, table in (("plain", out["plain"]), ("normalised, a typical query", out["normalised"])):
        if table is not None:
            print(f"  {label}: " + "; ".join(f"{_n(int(size))} {' / '.join(f'{v:.3f}' for v in q)}" for size, q in table.items()))
    return out
