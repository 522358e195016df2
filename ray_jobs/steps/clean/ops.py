"""The clean stage: normalise, remove C4's boilerplate lines (opt-in), identify the language of every row, apply
the quality rules, set `status`, redact PII.

Order of decisions for a readable row: `empty` first (nothing to identify), then `lang_not_allowed` (the
quality rules are tuned per language, e.g. the stop-word rule is English-only), then the quality rules in
`quality.REASONS` order. Rows the reader could not parse arrive with `_error` set and leave as `quarantined`.
Every row, kept or not, leaves with `lang` (ISO 639-1, "und" when undetermined) and `lang_score`.

With C4's line filters on, language ID and the rules judge the edited text; a kept row carries it, a dropped row
the text before the edit (what was judged to be a bad document, whole, for `ray-jobs inspect`), and a row whose
every line was removed is `too_few_sentences` (C4's rule for it), not `empty`. `c4_lines_removed` counts the
removed lines of every row. PII redaction comes last, over every row that is not quarantined (the rules judge the
text as written; nothing is written with an address in it), counted in `pii_redacted`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.base import Stage
from ray_jobs.steps.clean.config import CleanConfig
from ray_jobs.steps.clean.langid import LanguageDetector, detect_table
from ray_jobs.steps.clean.lines import filter_lines
from ray_jobs.steps.clean.normalize import normalize_text
from ray_jobs.steps.clean.pii import redact
from ray_jobs.steps.clean.quality import drop_reasons

LANG_NOT_ALLOWED = "lang_not_allowed"
UNDETERMINED = "und"
C4_LINES_REMOVED = "c4_lines_removed"
PII_REDACTED = "pii_redacted"


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
        text = pc.if_else(quarantined, table[schema.TEXT], text).combine_chunks()  # the reader's snippet as found
        # quarantined rows are not edited, identified (null text -> "und") nor redacted
        masked = pc.if_else(quarantined, pa.nulls(len(table), text.type), text)
        judged, removed = text, pa.array(np.zeros(len(table), np.int32))
        if self.cfg.c4_lines.enabled:
            masked, removed = filter_lines(masked, self.cfg.c4_lines)
            judged = pc.if_else(quarantined, text, masked)

        # detect_table cuts each text to max_chars in Arrow before it becomes a Python string
        detected = detect_table(self._detector, pa.table({schema.TEXT: masked}))
        lang_arr = pc.if_else(pc.less(detected["lang_score"], self.cfg.min_lang_score), UNDETERMINED,
                              detected["lang"])

        reason = drop_reasons(judged, lang_arr, self.cfg.quality)
        if self.cfg.allowed_langs:
            allowed = pc.is_in(lang_arr, value_set=pa.array(self.cfg.allowed_langs, pa.string()))
            not_empty = pc.fill_null(pc.not_equal(reason, "empty"), True)
            reason = pc.if_else(pc.and_(pc.invert(allowed), not_empty), LANG_NOT_ALLOWED, reason)
        emptied = pc.fill_null(pc.and_(pc.equal(reason, "empty"), pc.greater(removed, 0)), False)
        reason = pc.if_else(emptied, "too_few_sentences", reason)
        status = pc.if_else(quarantined, schema.QUARANTINED, pc.fill_null(reason, schema.KEPT))
        text = pc.if_else(pc.equal(status, schema.KEPT), judged, text)
        redacted, found = redact(pc.if_else(quarantined, pa.nulls(len(table), text.type), text), self.cfg.pii)
        text = pc.if_else(quarantined, text, redacted)
        table = table.set_column(table.schema.get_field_index(schema.TEXT), schema.TEXT, text)
        # a re-clean (or an input with its own language columns) gets fresh ones, never two columns of one name
        added = {"lang": lang_arr, "lang_score": detected["lang_score"], C4_LINES_REMOVED: removed,
                 PII_REDACTED: found}
        table = table.drop_columns([c for c in added if c in table.column_names])
        for name, column in added.items():
            table = table.append_column(name, column)
        return schema.set_status(table, status)
