"""The clean stage on the sample corpus: rows per status and rows/s on one process (issue 16).

    python benchmarks/clean_rules.py                          # defaults
    python benchmarks/clean_rules.py --set clean.quality.char_repetition_mode=run --reps 3
    PYTHONPATH=/tmp/base python benchmarks/clean_rules.py     # another checkout (the "before" figures)

Reads shards/sample/parquet (1,567 documents) into one table, runs CleanStage (normalise, language ID, quality
rules, line filters, PII) `--reps` times and prints the statuses of the last run and the best time, wall and CPU
(this process's CPU seconds: what other load on the machine distorts least). Also times `drop_reasons` alone (the
rules without language ID) on the normalised text, which is what the rules cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs.config import load_config
from ray_jobs.steps.clean.normalize import normalize_text
from ray_jobs.steps.clean.ops import CleanStage
from ray_jobs.steps.clean.quality import drop_reasons

SAMPLE = Path(__file__).resolve().parents[1] / "shards/sample/parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="config override, as `ray-jobs --set`")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--input", type=Path, default=SAMPLE)
    args = parser.parse_args(argv)
    cfg = load_config(None, args.set).clean
    table = pq.read_table(args.input, columns=["id", "text"])
    table = table.append_column("_error", pa.nulls(len(table), pa.string()))
    stage = CleanStage(cfg)
    stage.setup()
    stage_s = rules_s = stage_cpu = rules_cpu = float("inf")
    out = None
    for _ in range(args.reps):
        start, cpu = time.perf_counter(), time.process_time()
        out = stage(table)
        stage_s, stage_cpu = min(stage_s, time.perf_counter() - start), min(stage_cpu, time.process_time() - cpu)
        text = normalize_text(table["text"], cfg.normalize)
        start, cpu = time.perf_counter(), time.process_time()
        drop_reasons(text, out["lang"], cfg.quality)
        rules_s, rules_cpu = min(rules_s, time.perf_counter() - start), min(rules_cpu, time.process_time() - cpu)
    assert out is not None
    counts = Counter(out["status"].to_pylist())
    print(f"rows {len(table)}; clean stage {stage_s:.3f} s = {len(table) / stage_s:,.0f} rows/s "
          f"({len(table) / stage_cpu:,.0f} per CPU s); drop_reasons {rules_s:.3f} s = {len(table) / rules_s:,.0f} "
          f"rows/s ({len(table) / rules_cpu:,.0f} per CPU s)")
    for status, n in counts.most_common():
        print(f"  {status:24s} {n:5d}")
    for column in ("c4_lines_removed", "pii_redacted"):
        if column in out.column_names:
            print(f"  {column}: {sum(v or 0 for v in out[column].to_pylist())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
