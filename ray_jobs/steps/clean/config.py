"""The clean step's settings: normalisation, C4's line filters, language ID, quality rules, PII redaction."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_jobs.steps.clean.langid import LangIdConfig
from ray_jobs.steps.clean.lines import C4LinesConfig
from ray_jobs.steps.clean.normalize import NormalizeConfig
from ray_jobs.steps.clean.pii import PiiConfig
from ray_jobs.steps.clean.quality import QualityConfig


@dataclass(frozen=True)
class CleanConfig:
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    c4_lines: C4LinesConfig = field(default_factory=C4LinesConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    pii: PiiConfig = field(default_factory=PiiConfig)
    # Rows whose detected language is not listed are dropped as `lang_not_allowed`; empty = allow every language.
    allowed_langs: tuple[str, ...] = ("en",)
    min_lang_score: float = 0.0  # below this the language counts as undetermined ("und")
    # Language ID loads a model: it runs in an actor pool. Ray reserves 1 CPU per read task, so actors must
    # leave one free: 2 actors x 0.9 CPU on a 2-core machine starved the read and hung (seen here); 2 x 0.5 runs.
    actors: int = 2
    actor_cpus: float = 0.5
