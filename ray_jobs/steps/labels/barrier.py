"""The labels recipe: out-of-fold probabilities on Ray, then confident learning, then a ranked table of suspects.

    rows --FeaturizeStage--> + hashed n-grams, fold                      (tasks; materialized in input order)
    label counts                                                          (one pass: the classes)
    fold k = 0..K-1: train_fold on every block, rows outside fold k       (K Ray tasks side by side, each
                                                                            streaming the blocks, one at a time)
    rows --predict--> pred_probs by the model that did not see the row    (tasks; or external probabilities)
    class sums -> thresholds; confident joint -> calibrated -> prune counts; top-n margins -> cut-offs
                                                                          (three passes, a few numbers each)
    rows --flag, quality--> issues' (quality, id) to the driver -> rank   (only the suspects: a few %)
    rows + ranks --> RUN/labels/status=kept|label_issue|missing_label|quarantined/, _issues/ (ranked), _summary.json

The driver holds per-class numbers, the K models (classes x features each) and the suspects' ids: never the
corpus. Worker memory: one block plus the models.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import runtime, schema
from ray_jobs.config import LabelsConfig, RunConfig
from ray_jobs.errors import UserError
from ray_jobs.runtime import Dataset
from ray_jobs.steps.labels.model import (
    X_INDICES,
    X_VALUES,
    FeaturizeStage,
    class_index,
    num_features,
    predict,
    train_fold,
)
from ray_jobs.steps.split.ops import split_hashes

if TYPE_CHECKING:
    from ray_jobs.steps.labels.detect import Cutoffs

log = logging.getLogger("ray_jobs")

LABEL_ISSUE, MISSING_LABEL = "label_issue", "missing_label"
PROBS, PRED, P_GIVEN, QUALITY, ISSUE, RANK = (
    "pred_probs", "label_pred", "label_p_given", "label_quality", "label_issue", "label_rank")
ISSUES, SUMMARY = "_issues", "_summary.json"
MAX_MODEL_BYTES = 2 << 30  # the K models travel to every prediction task


def build(cfg: RunConfig, ds: Dataset, read_input=None) -> tuple[Dataset, dict]:
    from ray_jobs.steps.labels import detect  # imports cleanlab (2.3 s): only when the step runs

    lc = cfg.labels
    ds = runtime.map_tables(ds, _with_status(lc), batch_size=None)
    classes = _classes(ds, lc)
    if lc.probs_column or lc.probs_file:
        scored = runtime.materialize(_external_probs(ds, lc, len(classes)))
        model_note = {"probabilities": lc.probs_column or lc.probs_file}
    else:
        scored, model_note = _out_of_fold(ds, cfg, classes)
    scored = runtime.map_tables(scored, _with_y(lc, classes), batch_size=None)

    c = len(classes)
    sums = np.stack([_summed(p, col, c) for p in [_per_batch(scored, c, _sums_table)] for col in ("sum", "n")])
    t = detect.thresholds(sums)
    label_counts = sums[1].astype(np.int64)
    joints = _per_batch(scored, c, lambda y, p, _: pa.table({"n": detect.joint_counts(y, p, t).ravel()}))
    cal = detect.calibrated_joint(_summed(joints, "n", c * c).reshape(c, c).astype(np.int64), label_counts)
    cut = None
    if lc.filter_by != "confident_learning":
        n = detect.prune_counts(cal)
        parts = _per_batch(scored, c,
                           lambda y, p, tie: _candidates_table(detect.candidates(y, p, tie, n, label_counts)))
        cut = detect.merge_candidates(map(_candidates_dict, parts), n, label_counts)
    marked = runtime.materialize(runtime.map_tables(scored, _marker(lc, classes, t, cut), batch_size=None))
    ranks = _ranks(marked)
    final = runtime.map_with_side_table(marked, runtime.from_table(ranks, 1 << 20), _ranked)
    summary = _summary(lc, classes, label_counts, t, cal, len(ranks), model_note, marked)
    log.info("labels: %d suspects of %d labelled rows (%s)", len(ranks), int(label_counts.sum()), lc.filter_by)
    issues = runtime.map_tables(final, _issue_rows(lc), batch_size=None)
    return final, {ISSUES: issues, SUMMARY: json.dumps(summary, indent=2) + "\n"}


def _with_status(lc: LabelsConfig):
    def fn(table: pa.Table) -> pa.Table:
        if lc.label_column not in table.column_names:
            raise UserError(f"labels: the rows have no `{lc.label_column}` column (found {table.column_names}); "
                             "set labels.label_column to the column that holds the labels")
        status = table[schema.STATUS] if schema.STATUS in table.column_names else schema.initial_status(table)
        missing = pc.and_(pc.equal(status, schema.KEPT), pc.is_null(table[lc.label_column]))
        return schema.set_status(table, pc.if_else(missing, MISSING_LABEL, status))
    return fn


def _classes(ds: Dataset, lc: LabelsConfig) -> pa.Array:
    """The label values of kept rows, sorted (class i = the i-th): one pass over one column."""
    def counts(table: pa.Table) -> pa.Table:
        kept = table.filter(pc.equal(table[schema.STATUS], schema.KEPT))
        vc = pc.value_counts(kept[lc.label_column])
        return pa.table({"value": vc.field("values"), "n": vc.field("counts")})

    total: dict = {}
    for part in runtime.iter_tables(runtime.map_tables(ds.select_columns([lc.label_column, schema.STATUS]), counts,
                                                     batch_size=None)):
        for v, n in zip(part["value"].to_pylist(), part["n"].to_pylist()):
            total[v] = total.get(v, 0) + n
    if len(total) < 2:
        raise UserError(f"labels: `{lc.label_column}` has {len(total)} distinct value(s) among kept rows "
                         f"({list(total)[:5]}); label-error detection needs at least 2 classes")
    if len(total) > lc.max_classes:
        raise UserError(f"labels: `{lc.label_column}` has {len(total):,} distinct values, more than "
                         f"labels.max_classes "
                         f"({lc.max_classes}); is it really a label column? Raise labels.max_classes if it is")
    return pa.array(sorted(total))


def _out_of_fold(ds: Dataset, cfg: RunConfig, classes: pa.Array) -> tuple[Dataset, dict]:
    lc = cfg.labels
    model_bytes = lc.folds * len(classes) * num_features(lc) * 8
    if model_bytes > MAX_MODEL_BYTES:
        raise UserError(f"labels: {lc.folds} folds x {len(classes)} classes x {num_features(lc):,} features need "
                         f"{model_bytes / 2**30:.1f} GB of weights (limit 2 GB); lower labels.n_features")
    feats = runtime.materialize(runtime.apply(ds, FeaturizeStage(lc), batch_size=cfg.ray.batch_size), ordered=True)
    models = runtime.tasks_over_blocks(train_fold, feats, [(k, classes, lc) for k in range(lc.folds)],
                                      num_cpus=lc.trainer_cpus)
    n_feat = num_features(lc)

    def scored(table: pa.Table) -> pa.Table:
        probs = predict(table, models, n_feat)
        return table.drop_columns([X_INDICES, X_VALUES]).append_column(PROBS, _list_column(probs))

    note = {"model": "hashed word n-grams + logistic regression (SGD)", "folds": lc.folds, "ngram_max": lc.ngram_max,
            "char_ngrams": lc.char_ngrams, "n_features": lc.n_features, "alpha": lc.alpha, "epochs": lc.epochs}
    return runtime.materialize(runtime.map_tables(feats, scored, batch_size=None)), note


def _list_column(probs: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """(rows, classes) -> list<float32>, null where `valid` is False."""
    c = probs.shape[1]
    offsets = pa.array(np.arange(0, probs.size + 1, c, dtype=np.int32))
    mask = None if valid is None else pa.array(~valid)
    return pa.ListArray.from_arrays(offsets, pa.array(probs.astype(np.float32).ravel()), mask=mask)


def _external_probs(ds: Dataset, lc: LabelsConfig, n_classes: int) -> Dataset:
    """Probabilities given by the user: a list column of the rows, or a .npy + the row ids in its order."""
    def checked(table: pa.Table) -> pa.Table:
        probs = table[PROBS]
        kept = pc.equal(table[schema.STATUS], schema.KEPT)
        bad = pc.and_(kept, pc.or_(pc.is_null(probs), pc.not_equal(pc.list_value_length(probs), n_classes)))
        if pc.any(bad).as_py():
            i = pc.index(bad, True).as_py()
            raise UserError(f"labels: row {table[schema.ID][i]} has {table[PROBS][i]} as probabilities; expected "
                             f"{n_classes} numbers (one per class of `{lc.label_column}`, in sorted label order)")
        return table.set_column(table.schema.get_field_index(PROBS), PROBS, _probabilities(table[PROBS], n_classes))

    if lc.probs_column:
        return runtime.map_tables(ds, lambda t: checked(t.rename_columns(
            [PROBS if c == lc.probs_column else c for c in t.column_names])), batch_size=None)
    side = _probs_table(Path(lc.probs_file), Path(lc.probs_ids_file))

    def joined(side_table: pa.Table):
        index = {k: i for i, k in enumerate(side_table[schema.ID].to_pylist())}
        probs = side_table[PROBS].combine_chunks() if len(side_table) else None

        def fn(table: pa.Table) -> pa.Table:
            pos = pa.array([index.get(k) for k in table[schema.ID].to_pylist()], pa.int64())
            col = probs.take(pos) if probs is not None else pa.nulls(len(table), pa.list_(pa.float32()))
            return checked(table.append_column(PROBS, col))
        return fn

    return runtime.map_with_side_table(ds, runtime.from_table(side, 1 << 20), joined)


def _probabilities(col: pa.ChunkedArray, n_classes: int) -> pa.Array:
    """Rows of probabilities, checked (each within [0, 1] and summing to 1, to float32 rounding: the IMDB
    pyx.npy of the confident-learning paper reaches 1.00001) and clipped into [0, 1] as cleanlab requires."""
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    p = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, n_classes)
    worst = np.abs(p.sum(axis=1) - 1).max(initial=0)
    if worst > 1e-3 or p.min(initial=0) < -1e-3 or p.max(initial=1) > 1 + 1e-3:
        raise UserError(f"labels: external probabilities must lie in [0, 1] and sum to 1 per row; found values in "
                         f"[{p.min():.4g}, {p.max():.4g}] and row sums off by up to {worst:.3g}. Pass softmax "
                         "outputs, not logits")
    full = np.zeros((len(valid), n_classes), np.float32)
    full[valid] = np.clip(p, 0, 1)
    return _list_column(full, valid)


def _probs_table(probs_file: Path, ids_file: Path) -> pa.Table:
    probs = np.load(probs_file, allow_pickle=False)  # input data is never unpickled
    if ids_file.suffix == ".npy":
        ids = [str(x) for x in np.load(ids_file, allow_pickle=False)]
    elif ids_file.suffix == ".json":
        ids = [str(x) for x in json.loads(ids_file.read_text())]
    else:
        ids = ids_file.read_text().splitlines()
    if probs.ndim != 2 or len(probs) != len(ids):
        raise UserError(f"labels.probs_file {probs_file} holds an array of shape {probs.shape} but "
                         f"labels.probs_ids_file {ids_file} lists {len(ids):,} ids; expected (rows, classes) with one "
                         "id per row, in the same order")
    return pa.table({schema.ID: pa.array(ids, pa.string()), PROBS: _list_column(probs)})


def _with_y(lc: LabelsConfig, classes: pa.Array):
    def fn(table: pa.Table) -> pa.Table:
        y = class_index(table[lc.label_column], classes)
        y[table[schema.STATUS].to_numpy(zero_copy_only=False) != schema.KEPT] = -1
        return table.append_column("_y", pa.array(y))
    return fn


def _arrays(table: pa.Table, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class index, probabilities, tiebreak hash of the id) of a scored table; a row without probabilities (not
    kept) gets class -1 and zeros."""
    valid = pc.is_valid(table[PROBS]).to_numpy(zero_copy_only=False)
    probs = np.zeros((len(table), n_classes), np.float64)
    probs[valid] = pc.list_flatten(table[PROBS]).to_numpy(zero_copy_only=False).reshape(-1, n_classes)
    y = np.where(valid, table["_y"].to_numpy(), -1)
    return y, probs, split_hashes(table[schema.ID], 0)


def _per_batch(ds: Dataset, n_classes: int, fn) -> list[pa.Table]:
    """fn(y, probs, tie) -> a small Arrow table, on each block in a task; the tables come to the driver."""
    def task(table: pa.Table) -> pa.Table:
        return fn(*_arrays(table, n_classes))

    return list(runtime.iter_tables(runtime.map_tables(ds.select_columns(["_y", PROBS, schema.ID]), task,
                                                     batch_size=None)))


def _sums_table(y: np.ndarray, probs: np.ndarray, _tie: np.ndarray) -> pa.Table:
    from ray_jobs.steps.labels import detect

    s = detect.class_sums(y, probs)
    return pa.table({"sum": s[0], "n": s[1]})


def _summed(parts: list[pa.Table], column: str, size: int) -> np.ndarray:
    """Element-wise sum of one column over the per-block tables of `size` rows each (the driver receives them
    concatenated into batches, so sum by position)."""
    return sum((t[column].to_numpy().reshape(-1, size).sum(axis=0) for t in parts), np.zeros(size))


def _candidates_table(cands: dict) -> pa.Table:
    keys = [(k, j) for (k, j), (v, _) in cands.items() for _ in range(len(v))]
    return pa.table({"k": pa.array([k for k, _ in keys], pa.int32()), "j": pa.array([j for _, j in keys], pa.int32()),
                     "value": np.concatenate([v for v, _ in cands.values()] or [np.empty(0)]),
                     "tie": np.concatenate([t for _, t in cands.values()]
                                           or [np.empty(0, np.uint64)]).astype(np.uint64)})


def _candidates_dict(table: pa.Table) -> dict:
    k, j = table["k"].to_numpy(), table["j"].to_numpy()
    v, tie = table["value"].to_numpy(), table["tie"].to_numpy()
    return {(int(a), int(b)): (v[(k == a) & (j == b)], tie[(k == a) & (j == b)])
            for a, b in {(int(a), int(b)) for a, b in zip(k, j)}}


def _marker(lc: LabelsConfig, classes: pa.Array, t: np.ndarray, cut: Cutoffs | None):
    """The row-local decisions: predicted label, p(given), quality score, issue flag (and status on drop)."""
    from ray_jobs.steps.labels import detect

    def fn(table: pa.Table) -> pa.Table:
        y, probs, tie = _arrays(table, len(classes))
        issue = detect.flag(y, probs, tie, lc.filter_by, t, cut)
        scored = y >= 0
        pred = classes.take(pa.array(probs.argmax(axis=1))).to_pylist()
        out = (table.drop_columns(["_y"])
               .append_column(PRED, pa.array([p if s else None for p, s in zip(pred, scored)], classes.type))
               .append_column(P_GIVEN, pa.array(np.where(scored, probs[np.arange(len(y)), np.maximum(y, 0)], np.nan),
                                                 pa.float32(), mask=~scored))
               .append_column(QUALITY, pa.array(detect.quality(y, probs, lc.rank_by), pa.float32(), mask=~scored))
               .append_column(ISSUE, pa.array(issue)))
        if lc.action == "drop":
            out = schema.set_status(out, pc.if_else(pa.array(issue), LABEL_ISSUE, out[schema.STATUS]))
        return out
    return fn


def _ranks(marked: Dataset) -> pa.Table:
    """Rank 1 = the most suspect: suspects sorted by quality, then id. Only the suspects reach the driver."""
    def keys(table: pa.Table) -> pa.Table:
        return table.filter(table[ISSUE]).select([schema.ID, QUALITY])

    parts = list(runtime.iter_tables(runtime.map_tables(marked.select_columns([schema.ID, QUALITY, ISSUE]), keys,
                                                      batch_size=None)))
    if not parts:
        return pa.table({schema.ID: pa.array([], pa.string()), RANK: pa.array([], pa.int64())})
    ranked = pa.concat_tables(parts).sort_by([(QUALITY, "ascending"), (schema.ID, "ascending")])
    return pa.table({schema.ID: ranked[schema.ID], RANK: pa.array(np.arange(1, len(ranked) + 1))})


def _ranked(side: pa.Table):
    ids = side[schema.ID].combine_chunks() if len(side) else pa.array([], pa.string())
    ranks = side[RANK].combine_chunks() if len(side) else pa.array([], pa.int64())

    def fn(table: pa.Table) -> pa.Table:
        return table.append_column(RANK, ranks.take(pc.index_in(table[schema.ID], value_set=ids)))
    return fn


def _issue_rows(lc: LabelsConfig):
    """The ranked label_issues table: id, given label, predicted label, p(given), quality, rank, text."""
    def fn(table: pa.Table) -> pa.Table:
        t = table.filter(table[ISSUE])
        cols = {schema.ID: t[schema.ID], "label": t[lc.label_column], "predicted_label": t[PRED],
                "p_given": t[P_GIVEN], "quality": t[QUALITY], "rank": t[RANK], schema.TEXT: t[schema.TEXT]}
        if schema.SPLIT in t.column_names:
            cols[schema.SPLIT] = t[schema.SPLIT]
        return pa.table(cols).sort_by("rank")
    return fn


def _summary(lc: LabelsConfig, classes: pa.Array, label_counts: np.ndarray, t: np.ndarray, cal: np.ndarray,
             issues: int, model_note: dict, marked: Dataset) -> dict:
    """What the run decided with: every number here is recomputable from the rows' pred_probs and labels."""
    def agree(table: pa.Table) -> pa.Table:
        ok = pc.is_valid(table[PRED])
        same = pc.and_(ok, pc.equal(table[PRED], table[lc.label_column]))
        return pa.table({"scored": [pc.sum(ok).as_py() or 0], "agree": [pc.sum(same).as_py() or 0]})

    parts = list(runtime.iter_tables(runtime.map_tables(marked.select_columns([PRED, lc.label_column]), agree,
                                                      batch_size=None)))
    scored = sum(sum(p["scored"].to_pylist()) for p in parts)
    agreeing = sum(sum(p["agree"].to_pylist()) for p in parts)
    names = [str(c) for c in classes.to_pylist()]
    return {"label_column": lc.label_column, "classes": names,
            "label_counts": {n: int(c) for n, c in zip(names, label_counts)},
            "scored_rows": int(scored), "issues": int(issues), "filter_by": lc.filter_by, "rank_by": lc.rank_by,
            "action": lc.action, "oof_accuracy": agreeing / scored if scored else None,
            "thresholds": {n: float(x) for n, x in zip(names, t)},
            "estimated_label_errors": int(cal.sum() - np.trace(cal)),
            "confident_joint_calibrated": {"rows_given": names, "columns_true": names, "counts": cal.tolist()},
            **model_note}
