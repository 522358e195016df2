"""The decontam step's settings: which eval sets, which n-grams, what happens to a row that shares one."""

from __future__ import annotations

from dataclasses import dataclass

from ray_jobs.errors import UserError, check_choice


@dataclass(frozen=True)
class DecontamConfig:
    # Local eval sets (JSONL / Parquet files, folders or globs) whose items no training row may contain. Empty: the
    # step is off in a whole run (`ray-jobs decontam` without them fails and says so).
    eval_paths: tuple[str, ...] = ()
    text_column: str = "text"  # the eval item's text (question, passage, ...) in those files
    id_column: str = "id"  # names the eval item in `decontam_item`; "" or absent = "<file>:<row>"
    # Word n-gram length: 13 is the GPT-3 paper's choice (Brown et al. 2020, appendix C), kept by the Pile,
    # Llama and the FineWeb decontamination; shorter n-grams flag common phrases.
    ngram: int = 13
    # An eval item of fewer than `ngram` words is looked for whole (its k words as one k-gram, as GPT-3 did for
    # short items), but only from this many words: GPT-3 kept its per-benchmark n between 8 and 13 words, and a
    # 3-word item ("yes or no") occurs in countless unrelated documents. Shorter items are not indexed (their
    # count is logged). Each distinct short length present costs one more window hash per corpus word. With ngram
    # under min_words, every item of fewer than ngram words is skipped.
    min_words: int = 8
    # "drop": status `contaminated`; "flag": keep the row and only name the eval item in its columns.
    action: str = "drop"

    def __post_init__(self) -> None:
        check_choice("decontam.action", self.action, ("drop", "flag"))
        if self.ngram < 1:
            raise UserError(f"decontam.ngram must be at least 1 (words); got {self.ngram}")
        if self.min_words < 1:
            raise UserError(f"decontam.min_words must be at least 1 (words); got {self.min_words}; set it to "
                            f"decontam.ngram ({self.ngram}) to look for whole n-grams only")
