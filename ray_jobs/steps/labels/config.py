"""The labels step's settings."""

from __future__ import annotations

from dataclasses import dataclass

from ray_jobs.errors import UserError, check_choice


@dataclass(frozen=True)
class LabelsConfig:
    """Label-error detection (`ray-jobs labels`, ray_jobs/labels/): out-of-fold probabilities from a deliberately
    simple model, then confident learning. In `ray-jobs run` it runs after split (or leakage) when enabled."""

    enabled: bool = False
    label_column: str = "label"  # the text is input.text_column (renamed to `text` when read)
    # Out-of-fold probabilities: every row is predicted by the model that did not see it. 5 folds: each model
    # sees 80 % of the rows (cleanlab's default cv_n_folds is 5 too).
    folds: int = 5
    seed: int = 0
    # The model: hashed word n-grams (scikit-learn's HashingVectorizer, l2-normalised) + logistic regression by
    # SGD (log loss), one Ray task per fold streaming the feature blocks. On AG News test (7,600 rows, 5 % flipped)
    # word 1-2 grams, 2^18 features, alpha 1e-5 and 10 epochs found the flips at P 0.42 / R 0.88 (prune_by_noise_rate),
    # the same as lbfgs LogisticRegression (0.41 / 0.86) in 1/200 of its time.
    ngram_max: int = 2
    char_ngrams: bool = False  # add hashed char 3-5 grams (for short or noisy texts); ~4x the features per row
    n_features: int = 2 ** 18  # 2 MB of float64 weights per class per fold
    alpha: float = 1e-5  # L2 strength: 1e-4 underfit (recall 0.82), 1e-6 overfit (precision 0.35) on AG News
    epochs: int = 10
    # SGD sees this many random blocks (4 MB of text each by default) shuffled together per step, so a label-sorted
    # input still gives it mixed batches; the fold task's memory is these blocks plus the weights.
    mix_blocks: int = 8
    trainer_cpus: float = 1.0  # per fold task; folds run side by side as CPUs allow
    # Or bring your own out-of-sample probabilities: a list<float> column of the rows, or a .npy (rows x classes)
    # with a file of the row ids in the same order (.json list, .npy or one id per line); class i is the i-th
    # label value in sorted order.
    probs_column: str = ""
    probs_file: str = ""
    probs_ids_file: str = ""
    # cleanlab's filters: "prune_by_noise_rate" (its default: per (given, true) class pair, the rows with the
    # largest margin, as many as the calibrated confident joint estimates), "confident_learning" (the
    # off-diagonal of the confident joint), "both" (rows flagged by prune_by_noise_rate and by prune_by_class).
    filter_by: str = "prune_by_noise_rate"
    rank_by: str = "self_confidence"  # or "normalized_margin": lowest first in the ranked label_issues table
    # "drop": suspects go to status=label_issue (the next stage reads kept rows only); "flag": they stay kept,
    # marked by the label_issue column. Either way RUN/labels/_issues/ holds the ranked table.
    action: str = "drop"
    max_classes: int = 1000  # a label column with more values is probably not a label (an id, a free text)

    def __post_init__(self) -> None:
        check_choice("labels.filter_by", self.filter_by, ("prune_by_noise_rate", "confident_learning", "both"))
        check_choice("labels.rank_by", self.rank_by, ("self_confidence", "normalized_margin"))
        check_choice("labels.action", self.action, ("drop", "flag"))
        if self.folds < 2 or min(self.epochs, self.ngram_max, self.mix_blocks) < 1 or self.n_features < 16:
            raise UserError(f"labels.folds must be >= 2, labels.epochs, ngram_max and mix_blocks >= 1, n_features >= "
                             f"16; got {self.folds}, {self.epochs}, {self.ngram_max}, {self.mix_blocks}, "
                             f"{self.n_features}")
        if bool(self.probs_file) != bool(self.probs_ids_file):
            raise UserError("labels.probs_file needs labels.probs_ids_file (the row id of each of its rows) and "
                             "the other way round; set both or neither")
