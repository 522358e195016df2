"""The leakage step's settings (its MinHash settings are dedup.near's)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LeakageConfig:
    enabled: bool = True
    # Evaluation sets (files, folders or globs in any readable format) the training split must not overlap.
    eval_paths: tuple[str, ...] = ()
    # Drop train rows that are near duplicates of a val, test or eval row (status `leaked`); false only reports.
    drop_train: bool = True
