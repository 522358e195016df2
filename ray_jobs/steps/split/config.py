"""The split step's settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.90
    val: float = 0.05
    test: float = 0.05
    seed: int = 0
    stratify_by: str = ""  # a label column: exact per-class proportions; "" = plain hash split
    # Rows with the same value of this column land in the same split (e.g. a cluster id from near-dedup).
    group_by: str = "id"

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if min(self.train, self.val, self.test) < 0 or abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"split.train + split.val + split.test must be 1 with none negative; got "
                f"{self.train} + {self.val} + {self.test} = {total}"
            )
