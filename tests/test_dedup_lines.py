"""Boilerplate-line dedup (`[dedup.lines]`) on the sample's real mails and Project Gutenberg texts: in one process
(`ray-jobs dedup` alone and the plan's decide + row step give the same text), and through a planned run."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ray_jobs import runtime
from ray_jobs.config import load_config
from ray_jobs.errors import UserError
from ray_jobs.io.readers import discover
from ray_jobs.runtime import local
from ray_jobs.steps.dedup import barrier
from ray_jobs.steps.dedup.config import LinesConfig
from ray_jobs.steps.dedup.lines import DROP_LINES, LINES_REMOVED, TOO_SHORT, LineRemover, line_hashes
from tests.conftest import SAMPLE

LICENCE = "The Project Gutenberg Literary Archive Foundation is a non profit"


@pytest.fixture
def in_process():
    local.ACTIVE = True
    yield
    local.ACTIVE = False


def _line_docs(texts: list[str]) -> Counter:
    """In how many documents each stripped non-empty line occurs."""
    return Counter(line for t in texts for line in {s.strip() for s in t.split("\n") if s.strip()})


def test_lines_in_min_docs_documents_stay_only_in_the_lowest_id(tmp_path, in_process):
    sets = [f'input.paths=["{SAMPLE / "parquet"}"]', f"output.dir={tmp_path}", "dedup.lines.enabled=true",
            "dedup.method=\"off\""]
    cfg = load_config(None, sets)
    rows, _ = barrier.build(cfg, runtime.read_corpus(discover(cfg.input), cfg.input))
    out = rows.table()
    before = pq.read_table(SAMPLE / "parquet", columns=["id", "text"]).sort_by("id")
    text_before = dict(zip(before["id"].to_pylist(), before["text"].to_pylist()))
    holders = sorted(i for i, t in text_before.items() if LICENCE in t)
    assert len(holders) >= 3  # the licence of the Gutenberg books in the sample
    after = dict(zip(out["id"].to_pylist(), out["text"].to_pylist()))
    assert LICENCE in after[holders[0]] and not any(LICENCE in after[i] for i in holders[1:])
    kept = out.filter(pc.equal(out["status"], "kept"))
    counts = _line_docs(kept["text"].to_pylist())
    common = [line for line, n in _line_docs(list(text_before.values())).items() if n >= 3]
    assert common and all(counts[line] <= 1 for line in common)  # no unit of >= 3 documents is left twice
    removed = dict(zip(out["id"].to_pylist(), out[LINES_REMOVED].to_pylist()))
    changed = [i for i in text_before if after[i] != text_before[i]]
    assert changed and all(removed[i] > 0 for i in changed) and sum(removed.values()) > 1000
    assert all(len(after[i]) < len(text_before[i]) for i in changed)
    short = out.filter(pc.equal(out["status"], TOO_SHORT))
    assert all(len(t.strip()) < cfg.dedup.lines.min_chars for t in short["text"].to_pylist())
    assert len(out) == len(before)  # every row is still there, kept or dropped with a reason

    # in a plan: the digest of the text pass, the compact decisions, the row step: the same texts
    digest = barrier.MinHashDigest(cfg)(pa.table({"id": before["id"], "text": before["text"],
                                                   "status": ["kept"] * len(before)}))
    compact = runtime.from_table(digest.select(["id", *barrier.digest_columns(cfg)]), 10_000)
    decided = barrier.decide(cfg, compact)[0].table()
    lists = dict(zip(decided["id"].to_pylist(), decided[DROP_LINES].to_pylist()))
    listed = before.append_column(DROP_LINES, pa.array([lists[i] for i in before["id"].to_pylist()], pa.binary()))
    applied = LineRemover(cfg.dedup.lines)(listed)
    assert dict(zip(applied["id"].to_pylist(), applied["text"].to_pylist())) == after


def test_paragraph_units_and_a_clear_error_alone():
    cfg = LinesConfig(enabled=True, unit="paragraph", min_chars=10)
    hashes = np.asarray(line_hashes(pa.array(["Subscribe now!"]), "paragraph")[0].as_py(), np.uint64).tobytes()
    table = pa.table({"id": ["a", "b"], "text": ["Keep this part.\n\nSubscribe now!\n  \nEnd.", "Subscribe now!"],
                      DROP_LINES: pa.array([hashes, hashes], pa.binary())})
    out = LineRemover(cfg)(table)
    assert out["text"].to_pylist() == ["Keep this part.\n\nEnd.", ""]
    assert out[LINES_REMOVED].to_pylist() == [1, 1] and out["status"].to_pylist() == ["kept", TOO_SHORT]
    with pytest.raises(UserError, match="dedup.lines.enabled"):
        LineRemover(cfg)(table.drop_columns([DROP_LINES]))
    with pytest.raises(ValueError, match="unit must be one of line, paragraph"):
        LinesConfig(unit="sentence")
