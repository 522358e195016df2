"""The quality_model step's settings: a fastText classifier, the label whose probability is the score, a cut."""

from __future__ import annotations

from dataclasses import dataclass

from ray_jobs.errors import UserError


@dataclass(frozen=True)
class QualityModelConfig:
    # A fastText supervised model (`.bin` from `fasttext supervised`, or a quantised `.ftz`): a local path, or a
    # Hugging Face hub repo id ("owner/repo") with `model_file`, fetched once per worker through hf_hub_download
    # (needs network and the hub's cache; runs without network want the local path). Empty: the step is off.
    model: str = ""
    model_file: str = ""  # the file in the hub repo, e.g. DCLM's openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin
    # The label whose probability is the score: DCLM's classifier calls the good class `__label__hq`.
    label: str = "__label__hq"
    score_column: str = "quality_score"  # float32 in [0, 1] on every row the step sees
    # Rows scoring below this leave as `low_quality_score`; 0 = score only, drop nothing. The cut is corpus- and
    # model-specific: DCLM kept the top 10 % of its pool by this score, so read the score's quantiles first.
    min_score: float = 0.0
    # The head of each text the model reads. fastText averages the text's word and n-gram vectors, so the cost is
    # linear in the length and a long document's head already sets its score; 10,000 characters (~1,700 English
    # words) reach past the median web document, which is scored whole.
    max_chars: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise UserError(f"quality_model.min_score is a probability: expected 0..1, got {self.min_score}")
        if self.max_chars < 1:
            raise UserError(f"quality_model.max_chars must be at least 1; got {self.max_chars}")
        if not self.score_column:
            raise UserError("quality_model.score_column is empty: name the column the score goes to")
        if not self.label:
            raise UserError("quality_model.label is empty: give the model's label to score, e.g. __label__hq")

    @property
    def enabled(self) -> bool:
        return bool(self.model)
