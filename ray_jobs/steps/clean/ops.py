"""The clean stage: normalise, identify the language of every row, apply the quality rules, set `status`.

Order of decisions for a readable row: `empty` first (nothing to identify), then `lang_not_allowed` (the
quality rules are tuned per language, e.g. the stop-word rule is English-only), then the quality rules in
`quality.REASONS` order. Rows the reader could not parse arrive with `_error` set and leave as `quarantined`.
Every row, kept or not, leaves with `lang` (ISO 639-1, "und" when undetermined) and `lang_score`.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.base import Stage
from ray_jobs.steps.clean.config import CleanConfig
from ray_jobs.steps.clean.langid import LanguageDetector, detect_table
from ray_jobs.steps.clean.normalize import normalize_text
from ray_jobs.steps.clean.quality import drop_reasons

LANG_NOT_ALLOWED = "lang_not_allowed"
UNDETERMINED = "und"


class CleanStage(Stage):
    stateful = True  # the language-ID model loads once per actor

    def __init__(self, cfg: CleanConfig) -> None:
        self.cfg = cfg
        self._detector: LanguageDetector | None = None

    def setup(self) -> None:
        self._detector = LanguageDetector(self.cfg.langid)

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._detector is None:
            self.setup()
        assert self._detector is not None
        quarantined = pc.is_valid(table[schema.ERROR]).combine_chunks()
        text = normalize_text(table[schema.TEXT], self.cfg.normalize)
        text = pc.if_else(quarantined, table[schema.TEXT], text)  # keep the reader's raw snippet as found
        table = table.set_column(table.schema.get_field_index(schema.TEXT), schema.TEXT, text)

        # quarantined rows are not identified (null text -> "und"); detect_table cuts each text to max_chars in
        # Arrow before it becomes a Python string
        masked = pc.if_else(quarantined, pa.nulls(len(table), pa.string()), text)
        detected = detect_table(self._detector, pa.table({schema.TEXT: masked}))
        lang_arr = pc.if_else(pc.less(detected["lang_score"], self.cfg.min_lang_score), UNDETERMINED,
                              detected["lang"])

        reason = drop_reasons(text, lang_arr, self.cfg.quality)
        if self.cfg.allowed_langs:
            allowed = pc.is_in(lang_arr, value_set=pa.array(self.cfg.allowed_langs, pa.string()))
            not_empty = pc.fill_null(pc.not_equal(reason, "empty"), True)
            reason = pc.if_else(pc.and_(pc.invert(allowed), not_empty), LANG_NOT_ALLOWED, reason)
        status = pc.if_else(quarantined, schema.QUARANTINED, pc.fill_null(reason, schema.KEPT))
        # a re-clean (or an input with its own language columns) gets fresh ones, never two columns of one name
        table = table.drop_columns([c for c in ("lang", "lang_score") if c in table.column_names])
        table = table.append_column("lang", lang_arr).append_column("lang_score", detected["lang_score"])
        return schema.set_status(table, status)
