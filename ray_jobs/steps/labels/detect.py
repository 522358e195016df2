"""Confident learning over batches: cleanlab's rules, computed from a few per-class numbers, so the rows never
meet in one process.

cleanlab's `find_label_issues` needs every row's probabilities in memory. Its decisions reduce to:
1. per-class thresholds t_k = mean of p_k over rows labelled k (a sum and a count per class);
2. the confident joint: each row whose p_j >= t_j for some j counts at (given, guessed class) (a C x C sum),
   then calibrated to the label counts;
3. for `prune_by_noise_rate`, for each (given k, true j) pair the n_kj rows with the largest margin
   p_j - p_k, where n_kj comes from the calibrated joint: a top-n per pair, merged batch by batch;
4. a row flag from those numbers, which is row-local again.
So a run is three cheap passes over the (id, label, probabilities) rows. Each step uses cleanlab's own
functions where one exists for the small matrices (calibration, at-least-n-per-class). The results equal
`cleanlab.filter.find_label_issues` on the same probabilities (tests/test_labels.py), except that rows tied at
a pair's cut-off are decided by id hash here (cleanlab's argsort order is arbitrary there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cleanlab.count import calibrate_confident_joint
from cleanlab.filter import _keep_at_least_n_per_class  # private, pinned by cleanlab<3 in pyproject.toml
from cleanlab.internal.constants import CONFIDENT_THRESHOLDS_LOWER_BOUND, FLOATING_POINT_COMPARISON
from cleanlab.rank import get_normalized_margin_for_each_label, get_self_confidence_for_each_label

MIN_EXAMPLES_PER_CLASS = 1  # cleanlab's default: a class with this many rows or fewer is never pruned


def class_sums(y: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """(2, C): per class, the sum of p_k over rows labelled k, and their count."""
    c = probs.shape[1]
    ok = y >= 0
    sums = np.bincount(y[ok], weights=probs[ok, y[ok]], minlength=c)
    return np.stack([sums, np.bincount(y[ok], minlength=c).astype(np.float64)])


def thresholds(sums: np.ndarray) -> np.ndarray:
    """cleanlab's get_confident_thresholds: mean self-confidence per class, 2 (never reached) for an absent class."""
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(sums[1] > 0, sums[0] / sums[1], 2.0)
    return np.clip(t, CONFIDENT_THRESHOLDS_LOWER_BOUND, None)


def confident_guess(probs: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: is any class above its threshold, and the guessed true class (cleanlab's compute_confident_joint:
    the argmax when several classes pass, the one that passes otherwise)."""
    above = probs >= t - 1e-6
    n_above = above.sum(axis=1)
    return n_above > 0, np.where(n_above > 1, probs.argmax(axis=1), above.argmax(axis=1))


def joint_counts(y: np.ndarray, probs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(C, C) uncalibrated confident joint: rows = given label, columns = guessed true label."""
    c = probs.shape[1]
    confident, guess = confident_guess(probs, t)
    keep = confident & (y >= 0)
    return np.bincount(y[keep] * c + guess[keep], minlength=c * c).reshape(c, c)


def calibrated_joint(joint: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """cleanlab's calibration: each given-label row scaled to that label's count, the total to the row count."""
    joint = joint.copy()
    np.fill_diagonal(joint, joint.diagonal().clip(min=1))
    labels = np.repeat(np.arange(len(label_counts)), label_counts.astype(np.int64))  # what cleanlab counts from
    return calibrate_confident_joint(joint, labels)


def prune_counts(cal_joint: np.ndarray) -> np.ndarray:
    """n[k, j]: how many rows labelled k to flag as truly j (cleanlab's prune count matrix, transposed back)."""
    return _keep_at_least_n_per_class(cal_joint.T, n=MIN_EXAMPLES_PER_CLASS).T


def quality(y: np.ndarray, probs: np.ndarray, method: str) -> np.ndarray:
    """cleanlab's label quality score per row (lower = more suspect); NaN for unlabelled rows."""
    out = np.full(len(y), np.nan)
    ok = y >= 0
    fn = get_self_confidence_for_each_label if method == "self_confidence" else get_normalized_margin_for_each_label
    if ok.any():
        out[ok] = fn(y[ok], probs[ok])
    return out


@dataclass(frozen=True)
class Cutoffs:
    """The n-th largest (value, -tiebreak) per pair: `margin` per (k, j) for prune_by_noise_rate, and per class
    the n-th smallest self-confidence for prune_by_class (stored negated, so both are "largest")."""

    margin: dict[tuple[int, int], tuple[float, int]]
    by_class: dict[int, tuple[float, int]]


def candidates(y: np.ndarray, probs: np.ndarray, tie: np.ndarray, n: np.ndarray, label_counts: np.ndarray) -> dict:
    """Per pair, one batch's top-n (value, tiebreak) candidates; values are what gets ranked largest-first: the
    margin p_j - p_k for (k, j), and -p_k for (k, k) (prune_by_class: the lowest self-confidence)."""
    out: dict = {}
    c = probs.shape[1]
    for k in range(c):
        rows = np.flatnonzero(y == k)
        if not len(rows) or label_counts[k] <= MIN_EXAMPLES_PER_CLASS:
            continue
        for j in range(c):
            want = int(n[k, j]) if j != k else int(label_counts[k] - n[k, k])  # j == k: prune_by_class
            if want < 1:
                continue
            v = probs[rows, j] - probs[rows, k] if j != k else -probs[rows, k]
            out[(k, j)] = _top(v, tie[rows], want)
    return out


def _top(values: np.ndarray, tie: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n largest by (value desc, tiebreak asc)."""
    order = np.lexsort((tie, -values))[:n]
    return values[order], tie[order]


def merge_candidates(parts: Iterable[dict], n: np.ndarray, label_counts: np.ndarray) -> Cutoffs:
    """Fold the batches' candidates into the exact top-n per pair (memory: n per pair) and return the cut-offs."""
    best: dict = {}
    for part in parts:
        for key, (v, t) in part.items():
            if key in best:
                v, t = np.concatenate([best[key][0], v]), np.concatenate([best[key][1], t])
            k, j = key
            want = int(n[k, j]) if j != k else int(label_counts[k] - n[k, k])
            best[key] = _top(v, t, want)
    margin = {key: (float(v[-1]), int(t[-1])) for key, (v, t) in best.items() if key[0] != key[1]}
    by_class = {k: (float(v[-1]), int(t[-1])) for (k, j), (v, t) in best.items() if k == j}
    return Cutoffs(margin, by_class)


def _at_or_above(values: np.ndarray, tie: np.ndarray, cut: tuple[float, int]) -> np.ndarray:
    return (values > cut[0]) | ((values == cut[0]) & (tie <= cut[1]))


def flag(y: np.ndarray, probs: np.ndarray, tie: np.ndarray, filter_by: str, t: np.ndarray,
         cut: Cutoffs | None) -> np.ndarray:
    """The label-issue flag of each row, as cleanlab's find_label_issues decides it for `filter_by`."""
    ok = y >= 0
    yk = np.where(ok, y, 0)
    if filter_by == "confident_learning":
        confident, guess = confident_guess(probs, t)
        issue = confident & (guess != yk)
    else:
        assert cut is not None
        issue = np.zeros(len(y), bool)
        for (k, j), cutoff in cut.margin.items():
            rows = y == k
            issue[rows] |= _at_or_above(probs[rows, j] - probs[rows, k], tie[rows], cutoff)
        if filter_by == "both":
            by_class = np.zeros(len(y), bool)
            for k, cutoff in cut.by_class.items():
                rows = y == k
                by_class[rows] = _at_or_above(-probs[rows, k], tie[rows], cutoff)
            issue &= by_class
    # cleanlab never flags a row whose given label is (within float noise) the model's top class
    bumped = probs.astype(np.float64)
    bumped[np.arange(len(y)), yk] += FLOATING_POINT_COMPARISON
    issue &= bumped.argmax(axis=1) != yk
    return issue & ok
