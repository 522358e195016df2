"""A step from outside the package: one module and one `register()` call (tests/test_registry.py).

`keyword` drops rows whose text contains one of `[keyword] words` (reason `keyword`) and adds `keyword_hits`;
it declares its config section, its stats and its report check like the built-in steps."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.base import Stage
from ray_jobs.steps.registry import ROW, Step


@dataclass(frozen=True)
class KeywordConfig:
    words: tuple[str, ...] = ("lorem ipsum",)


class KeywordStage(Stage):
    def __init__(self, cfg: KeywordConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        text = pc.utf8_lower(pc.fill_null(table[schema.TEXT], ""))
        hits = pa.array([0] * len(table), pa.int64())
        for word in self.cfg.words:
            hits = pc.add(hits, pc.count_substring(text, word.lower()))
        status = table[schema.STATUS] if schema.STATUS in table.column_names else schema.initial_status(table)
        dropped = pc.and_(pc.equal(status, schema.KEPT), pc.greater(hits, 0))
        return schema.set_status(table.append_column("keyword_hits", hits), pc.if_else(dropped, "keyword", status))


def _stats(run, out: dict) -> dict:
    return out | {"keyword_rows": out["dropped"].get("keyword", 0)}


def _check(data):
    from ray_jobs.report.checks import PASS, Check

    n = data.stats_now["stages"]["keyword"]["dropped"].get("keyword", 0)
    return Check("keyword filter applied", PASS, f"{n} rows dropped for [keyword] words")


STEP = Step(name="keyword", section="keyword", kind=ROW, doc="drop rows that contain a listed word",
            adds=("keyword_hits",), drops=("keyword",), ops=lambda cfg: [KeywordStage(cfg.extra["keyword"])],
            stats=_stats, check=_check, config_cls=KeywordConfig, after="clean")
