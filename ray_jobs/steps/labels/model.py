"""The deliberately simple model behind out-of-fold probabilities: hashed word (and char) n-grams + logistic
regression trained by SGD, one model per fold.

High bias is the point (Northcutt et al., confident learning): a model that cannot memorise a row's label
gives an honest out-of-sample opinion of it. Hashing needs no vocabulary pass, so featurising is a pure
batch transform; SGD's `partial_fit` lets a fold's model stream the feature blocks instead of holding the
corpus. Nothing here imports Ray: the engine feeds the blocks (jobs/labels.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import FeatureUnion

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.base import Stage
from ray_jobs.steps.labels.config import LabelsConfig
from ray_jobs.steps.split.ops import split_hashes

X_INDICES, X_VALUES, FOLD, Y = "_x_indices", "_x_values", "label_fold", "_y"


def vectorizer(cfg: LabelsConfig) -> HashingVectorizer | FeatureUnion:
    words = HashingVectorizer(n_features=cfg.n_features, ngram_range=(1, cfg.ngram_max), alternate_sign=False,
                              norm="l2", dtype=np.float32)
    if not cfg.char_ngrams:
        return words
    chars = HashingVectorizer(n_features=cfg.n_features, analyzer="char_wb", ngram_range=(3, 5),
                              alternate_sign=False, norm="l2", dtype=np.float32)
    return FeatureUnion([("words", words), ("chars", chars)])


def num_features(cfg: LabelsConfig) -> int:
    return cfg.n_features * (2 if cfg.char_ngrams else 1)


class FeaturizeStage(Stage):
    """Adds the row's hashed n-gram vector (CSR: `_x_indices`, `_x_values`) and its fold, a hash of (id, seed):
    the fold does not depend on the layout of blocks or workers."""

    def __init__(self, cfg: LabelsConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        texts = pc.fill_null(table[schema.TEXT], "").to_pylist()
        x = vectorizer(self.cfg).transform(texts).tocsr()
        x.sort_indices()
        offsets = pa.array(x.indptr.astype(np.int32))
        fold = (split_hashes(table[schema.ID], self.cfg.seed) % np.uint64(self.cfg.folds)).astype(np.int16)
        return (table.append_column(X_INDICES, pa.ListArray.from_arrays(offsets, pa.array(x.indices.astype(np.int32))))
                .append_column(X_VALUES, pa.ListArray.from_arrays(offsets, pa.array(x.data.astype(np.float32))))
                .append_column(FOLD, pa.array(fold)))


def features(table: pa.Table, n_features: int) -> sp.csr_matrix:
    """The CSR matrix of a featurised table (rebuilt from the list lengths, so sliced arrays are fine)."""
    lengths = pc.fill_null(pc.list_value_length(table[X_INDICES]), 0).to_numpy()
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = pc.list_flatten(table[X_INDICES]).to_numpy()
    values = pc.list_flatten(table[X_VALUES]).to_numpy()
    return sp.csr_matrix((values, indices, indptr), shape=(len(table), n_features))


def class_index(labels: pa.ChunkedArray | pa.Array, classes: pa.Array) -> np.ndarray:
    """Each label's position in `classes`; -1 for a null label (a row that cannot be scored)."""
    return pc.fill_null(pc.index_in(labels, value_set=classes), -1).to_numpy().astype(np.int32)


def train_fold(blocks: Sequence[pa.Table], fold: int, classes: pa.Array, cfg: LabelsConfig) -> SGDClassifier:
    """Logistic regression (SGD, log loss) on every labelled row outside `fold`: `epochs` passes over the blocks,
    in a seeded order per pass, `mix_blocks` blocks at a time. Memory: those blocks plus the weights
    (classes x features x 8 bytes)."""
    # average=True (ASGD: the mean of the weights over all steps) makes the model insensitive to block order: on
    # IMDB's label-sorted test set plain SGD over 8-block windows reached 0.55 accuracy (the last windows pull it
    # to one class), averaged 0.889, the same as plain SGD on fully shuffled rows (0.891).
    clf = SGDClassifier(loss="log_loss", alpha=cfg.alpha, average=True, random_state=cfg.seed + fold)
    rng = np.random.default_rng(cfg.seed + fold)
    all_classes = np.arange(len(classes))
    seen = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(len(blocks))
        for start in range(0, len(order), cfg.mix_blocks):
            # One partial_fit (which shuffles its rows) over several random blocks: inputs are often sorted by
            # label or source, and single-class steps are what SGD handles worst.
            t = pa.concat_tables([blocks[i] for i in order[start:start + cfg.mix_blocks]])
            y = class_index(t[cfg.label_column], classes)
            mask = (t[FOLD].to_numpy() != fold) & (y >= 0)
            if mask.any():
                clf.partial_fit(features(t, num_features(cfg))[mask], y[mask], classes=all_classes)
                seen += int(mask.sum())
    if not seen:
        raise UserError(f"fold {fold} has no labelled rows to train on: every row with a `{cfg.label_column}` "
                         f"is in that fold; give more rows or fewer labels.folds ({cfg.folds})")
    return clf


def predict(table: pa.Table, models: Sequence[SGDClassifier], n_features: int) -> np.ndarray:
    """Out-of-fold probabilities: row i by the model of the fold it was held out of (rows x classes, float32)."""
    x = features(table, n_features)
    fold = table[FOLD].to_numpy()
    out = np.zeros((len(table), len(models[0].classes_)), np.float32)
    for k, model in enumerate(models):
        rows = np.flatnonzero(fold == k)
        if len(rows):
            out[rows] = model.predict_proba(x[rows])
    return out
