"""Scoring a de-duplication against labelled groups (the ground_truth.json format of dedup-bench).

Shared by `dedup calibrate` (local embeddings) and benchmarks/quality.py (through the API):
pairwise precision / recall / F1 of a partition, recall per edit and per source, and a threshold
sweep over scored pairs with union-find.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


# -- data set -------------------------------------------------------------------------------------
@dataclass
class Dataset:
    folder: Path
    group_of: dict[str, str]  # image name -> group id (the original's name)
    original_of: dict[str, str]  # copy name -> original name
    edit_of: dict[str, str]  # copy name -> edit, from edits.json
    n_groups_total: int
    # A composite of two photos (edits.json "other": the photo it was pasted on) -> the other
    # photo's group: pairs of the composite with that group are neither true nor false.
    ignored_group_of: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.group_of)


def source_of(name: str) -> str:
    return name.split("-", 1)[0]


def load_dataset(folder: Path, limit_groups: int | None, seed: int) -> Dataset:
    truth = json.loads((folder / "ground_truth.json").read_text())
    keys = sorted(truth)
    if limit_groups is not None and limit_groups < len(keys):
        keys = sorted(random.Random(seed).sample(keys, limit_groups))
    group_of: dict[str, str] = {}
    original_of: dict[str, str] = {}
    for original in keys:
        for name in [original, *truth[original]]:
            if name in group_of:
                raise SystemExit(f"ground_truth.json: {name} is in two groups")
            group_of[name] = original
        for copy in truth[original]:
            original_of[copy] = original
    missing = [n for n in group_of if not (folder / "images" / n).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} images of ground_truth.json are not in {folder}/images, e.g. {missing[:3]}")
    edit_of: dict[str, str] = {}
    edits_path = folder / "edits.json"
    if edits_path.is_file():
        edits = json.loads(edits_path.read_text())
        edit_of = {copy: e["edit"] for copy, e in edits.items() if copy in original_of}
        ignored = {copy: group_of[e["other"]] for copy, e in edits.items() if copy in original_of and e.get("other") in group_of}
    else:
        ignored = {}
    return Dataset(folder, group_of, original_of, edit_of, len(truth), ignored)


# -- scoring --------------------------------------------------------------------------------------
def pairs(n: int) -> int:
    return n * (n - 1) // 2


def prf(tp: int, predicted: int, true: int) -> dict:
    precision = tp / predicted if predicted else 1.0
    recall = tp / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp_pairs": tp, "predicted_pairs": predicted, "true_pairs": true}


def pairwise_scores(pred: dict[str, str], truth: dict[str, str], ignored_group_of: dict[str, str] | None = None) -> dict:
    """Pairwise P/R/F1 of the partition `pred` against `truth` (both: item -> label). Pairs of
    an item x with the group ignored_group_of[x] count neither way (a composite of two photos
    with the photo it was pasted on); other pairs across those two groups are still false."""
    cells = Counter((pred[x], truth[x]) for x in truth)
    tp = sum(pairs(n) for n in cells.values())
    predicted = sum(pairs(n) for n in Counter(pred[x] for x in truth).values())
    true = sum(pairs(n) for n in Counter(truth.values()).values())
    if ignored_group_of:
        predicted -= sum(cells[(pred[x], g)] for x, g in ignored_group_of.items() if x in pred and g != truth[x])
    return prf(tp, predicted, true)


def cluster_shape(pred: dict[str, str]) -> dict:
    sizes = Counter(pred.values()).values()
    return {"clusters": len(sizes), "multi": sum(1 for s in sizes if s > 1), "singletons": sum(1 for s in sizes if s == 1), "largest": max(sizes, default=0)}


def copy_recall(pred: dict[str, str], data: Dataset) -> dict[str, bool]:
    """copy -> whether it is in the same predicted cluster as its original."""
    return {c: pred[c] == pred[o] for c, o in data.original_of.items()}


def per_source(pred: dict[str, str], data: Dataset) -> dict[str, dict]:
    """Per source prefix: pair recall inside its groups, copy recall, and false pairs touching it."""
    truth = data.group_of
    src = {x: source_of(x) for x in truth}
    found = copy_recall(pred, data)
    out: dict[str, dict] = {}
    for s in sorted(set(src.values())):
        mine = {x for x in truth if src[x] == s}
        groups = {truth[x] for x in mine}
        tp = sum(pairs(n) for n in Counter((pred[x], truth[x]) for x in mine).values())
        true = sum(pairs(n) for n in Counter(truth[x] for x in mine).values())
        copies = [c for c in data.original_of if c in mine]
        # False pairs with at least one image of source s = all false pairs - those among other sources.
        out[s] = {
            "groups": len(groups),
            "images": len(mine),
            "pair_recall": tp / true if true else 1.0,
            "copy_recall": sum(found[c] for c in copies) / len(copies) if copies else None,
            "false_pairs": _false_pairs(pred, truth, set(truth)) - _false_pairs(pred, truth, set(truth) - mine),
        }
    return out


def _false_pairs(pred: dict[str, str], truth: dict[str, str], items: set[str]) -> int:
    predicted = sum(pairs(n) for n in Counter(pred[x] for x in items).values())
    agree = sum(pairs(n) for n in Counter((pred[x], truth[x]) for x in items).values())
    return predicted - agree


def partition_diff(a: dict[str, str], b: dict[str, str]) -> dict:
    """Pairs together in a but not in b, and the reverse."""
    both = sum(pairs(n) for n in Counter((a[x], b[x]) for x in a).values())
    in_a = sum(pairs(n) for n in Counter(a.values()).values())
    in_b = sum(pairs(n) for n in Counter(b[x] for x in a).values())
    return {"only_first": in_a - both, "only_second": in_b - both}


class Partition:
    """Union-find that keeps pairwise counts up to date as clusters merge."""

    def __init__(self, truth: dict[str, str]):
        self.truth = truth
        self.parent = {x: x for x in truth}
        self.size = {x: 1 for x in truth}
        self.groups = {x: Counter({truth[x]: 1}) for x in truth}
        self.tp = 0
        self.predicted = 0
        self.true = sum(pairs(n) for n in Counter(truth.values()).values())

    def find(self, x: str) -> str:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        ga, gb = self.groups[ra], self.groups.pop(rb)
        if len(ga) < len(gb):
            ga, gb = gb, ga
        self.tp += sum(n * ga.get(g, 0) for g, n in gb.items())
        self.predicted += self.size[ra] * self.size[rb]
        ga.update(gb)
        self.groups[ra] = ga
        self.parent[rb] = ra
        self.size[ra] += self.size.pop(rb)

    def labels(self) -> dict[str, str]:
        return {x: self.find(x) for x in self.truth}

    def scores(self) -> dict:
        return prf(self.tp, self.predicted, self.true)


def sweep(edges: dict[tuple[str, str], float], data: Dataset, thresholds: list[float], target_precision: float, keep_labels_at: float, floor: float) -> dict:
    """Connected components of 'similarity >= t' for each t, adding edges from the most similar down.

    Also finds the smallest threshold t such that precision >= target at t and at every higher
    threshold (exact: checked after each distinct similarity value). `floor` is the lowest
    similarity recorded; the search stops there."""
    part = Partition(data.group_of)
    ordered = sorted(edges.items(), key=lambda e: -e[1])
    pending = sorted(set(thresholds), reverse=True)
    rows: dict[float, dict] = {}
    kept_labels: dict[str, str] = {}
    safe: dict | None = None
    last_ok_sim: float | None = None

    def record(t: float) -> None:
        labels = part.labels()
        found = copy_recall(labels, data)
        by_edit: dict[str, list[bool]] = defaultdict(list)
        for c, e in data.edit_of.items():
            by_edit[e].append(found[c])
        rows[t] = {
            "threshold": t,
            **part.scores(),
            **cluster_shape(labels),
            "copy_recall": sum(found.values()) / len(found) if found else None,
            "copy_recall_by_edit": {e: sum(v) / len(v) for e, v in sorted(by_edit.items())},
        }
        if t == keep_labels_at:
            kept_labels.update(labels)

    i = 0
    while i < len(ordered):
        sim = ordered[i][1]
        while pending and pending[0] > sim:
            record(pending.pop(0))
        while i < len(ordered) and ordered[i][1] == sim:
            part.union(*ordered[i][0])
            i += 1
        if safe is None and part.scores()["precision"] < target_precision:
            safe = {"threshold": last_ok_sim, "first_failing_similarity": sim}
        elif safe is None:
            last_ok_sim = sim
    for t in pending:
        record(t)
    if safe is None:  # precision held down to the lowest recorded similarity
        safe = {"threshold": floor, "first_failing_similarity": None}
    if safe["threshold"] is not None:
        safe.update(components_at(edges, data, safe["threshold"]).scores())
    return {"rows": [rows[t] for t in sorted(rows)], "safe": safe, "labels_at_default": kept_labels}


def components_at(edges: dict[tuple[str, str], float], data: Dataset, t: float) -> Partition:
    part = Partition(data.group_of)
    for (a, b), s in edges.items():
        if s >= t:
            part.union(a, b)
    return part
