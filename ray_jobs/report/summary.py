"""The end-of-run summary table (from stats.json) and `inspect`'s sample rows."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ray_jobs import schema


def format_summary(stats: dict[str, Any]) -> str:
    rows = [("stage", "rows in", "rows out", "dropped", "quarantined", "detail")]
    for name, s in stats["stages"].items():
        if "splits" in s:
            detail = "  ".join(f"{k}={v}" for k, v in sorted(s["splits"].items()))
            if "tokens" in s:
                detail += f"  tokens={s['tokens']:,}"
        else:
            detail = ""
        rows.append((name, f"{s['rows_in']:,}", f"{s['rows_out']:,}", f"{sum(s['dropped'].values()):,}",
                     f"{s['quarantined']:,}", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r[:5], widths))) + "  " + r[5]
             for r in rows]
    lines.insert(1, "-" * max(len(x) for x in lines))
    drops = [(stage, reason, n) for stage, s in stats["stages"].items() for reason, n in s["dropped"].items()]
    if drops:
        lines += ["", "dropped by reason:"]
        lines += [f"  {stage:<9} {reason:<24} {n:>9,}" for stage, reason, n in drops]
    ok = "holds" if stats["invariant_ok"] else "BROKEN"
    lines += ["", f"rows_in == rows_out + dropped + quarantined {ok} for every stage; output: {stats['run_dir']}"]
    return "\n".join(lines)


def sample_rows(path: str | Path, reason: str | None, n: int) -> pa.Table:
    """The first `n` rows under a stage folder (or a file), optionally only those with status/split == reason."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p} does not exist; give a run's stage folder (e.g. RUN/clean) or a Parquet file")
    ds = pads.dataset(str(p), format="parquet", partitioning="hive", exclude_invalid_files=True)
    names = ds.schema.names
    flt = None
    if reason is not None:
        col = schema.STATUS if schema.STATUS in names else schema.SPLIT if schema.SPLIT in names else None
        if col is None:
            raise ValueError(f"--reason needs a status or split partition under {p}; found columns {names}")
        flt = pc.field(col) == reason
    return ds.head(n, filter=flt)


def format_rows(table: pa.Table, width: int = 100) -> str:
    out = []
    for row in table.to_pylist():
        text = row.pop(schema.TEXT, None)
        head = "  ".join(f"{k}={_short(v)}" for k, v in row.items() if k in (
            schema.ID, schema.STATUS, schema.SPLIT, "lang", "lang_score", "label", schema.ERROR, "duplicate_of",
            "num_tokens", schema.SOURCE))
        out.append(head)
        if text is not None:
            out.append(textwrap.indent(textwrap.shorten(text, 400, placeholder=" …") or "(empty)", "    "))
        elif "input_ids" in row:
            out.append(f"    input_ids[:16]={row['input_ids'][:16]}")
        out.append("")
    return "\n".join(out) if out else "(no rows)"


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    s = str(v)
    return s if len(s) < 80 else s[:77] + "..."
