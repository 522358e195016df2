"""The end-of-run summary table (from stats.json) and `inspect`'s sample rows.

A step that wrote decisions (one row per id, no text: dedup, split, leakage inside a plan) is inspected with its
rows' texts, read for the shown ids only from the text rows that step decided on (RUN/clean/status=kept with the
default plan): see `with_text`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.rundir import DECISIONS, ROWS, RunDir

# The columns `inspect` prints of each row (besides the text).
SHOWN = (schema.ID, schema.STATUS, schema.SPLIT, "lang", "lang_score", "label", schema.ERROR, "duplicate_of",
         "num_tokens", schema.SOURCE)


def stage_detail(s: dict[str, Any]) -> str:
    """One stage's extra figures from stats.json: rows per split and tokens, packing, near-dup cluster sizes."""
    if "packing" in s:
        pk = s["packing"]
        return (f"sequences of {pk['seq_len']}: {pk['packed_tokens']:,} tokens, padding {pk['padding_tokens']:,}, "
                f"cropped {pk['cropped_tokens']:,}, efficiency {pk['efficiency']:.1%}")
    if "cluster_sizes" in s:
        return "near-dup clusters by size: " + "  ".join(f"{k}:{v:,}" for k, v in s["cluster_sizes"].items())
    if "splits" in s:
        detail = "  ".join(f"{k}={v}" for k, v in sorted(s["splits"].items()))
        return detail + (f"  tokens={s['tokens']:,}" if "tokens" in s else "")
    return ""


def format_summary(stats: dict[str, Any]) -> str:
    rows = [("stage", "rows in", "rows out", "dropped", "quarantined", "detail")]
    for name, s in stats["stages"].items():
        rows.append((name, f"{s['rows_in']:,}", f"{s['rows_out']:,}", f"{sum(s['dropped'].values()):,}",
                     f"{s['quarantined']:,}", stage_detail(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r[:5], widths))) + "  " + r[5]
             for r in rows]
    lines.insert(1, "-" * max(len(x) for x in lines))
    drops = [(stage, reason, n) for stage, s in stats["stages"].items() for reason, n in s["dropped"].items()]
    if drops:
        lines += ["", "dropped by reason:"]
        lines += [f"  {stage:<9} {reason:<24} {n:>9,}" for stage, reason, n in drops]
    ok = "holds" if stats["invariant_ok"] else "BROKEN"
    lines += ["", f"rows_in == rows_out + dropped + quarantined {ok} for every stage (pack: every token packed or "
                  f"counted as cropped); output: {stats['run_dir']}"]
    return "\n".join(lines)


def sample_rows(path: str | Path, reason: str | None, n: int) -> pa.Table:
    """The first `n` rows under a stage folder (or a file), optionally only those with status/split == reason: the
    folder's partition (a split step's decisions also carry a `status` column, always kept)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p} does not exist; give a run's stage folder (e.g. RUN/clean) or a Parquet file")
    ds = pads.dataset(str(p), format="parquet", partitioning="hive", exclude_invalid_files=True)
    names = ds.schema.names
    flt = None
    if reason is not None:
        parts = [d.name.split("=", 1)[0] for d in sorted(p.glob("*=*")) if d.is_dir()]
        col = next((c for c in (*parts, schema.STATUS, schema.SPLIT) if c in names), None)
        if col is None:
            raise UserError(f"--reason needs a status or split partition under {p}; found columns {names}")
        flt = pc.field(col) == reason
    return with_text(p, ds.head(n, filter=flt))


def with_text(path: Path, rows: pa.Table) -> pa.Table:
    """`rows` read under `path` with their texts when `path` is in the folder of a step that wrote decisions:
    the text and the printed columns they lack, from the text rows that step decided on, for these ids only (a
    dataset filter on id). Anything else comes back as it is."""
    source = decided_on(path)
    if source is None or not len(rows) or schema.TEXT in rows.column_names or schema.ID not in rows.column_names:
        return rows
    ds = pads.dataset(str(source), format="parquet", partitioning="hive", exclude_invalid_files=True)
    cols = [schema.ID, schema.TEXT] + [c for c in SHOWN if c in ds.schema.names and c not in rows.column_names]
    texts = ds.to_table(columns=list(dict.fromkeys(cols)), filter=pc.field(schema.ID).isin(rows[schema.ID]))
    return attach(rows, texts)


def decided_on(path: Path) -> Path | None:
    """The kept text rows a decisions folder's step read: the last step before it in its run that wrote rows with
    their text (the run is the nearest folder above `path` with _SUCCESS markers); None for any other folder."""
    from ray_jobs.steps.registry import get

    root = next((d for d in (path, *path.parents) if d.is_dir() and any(d.glob("_SUCCESS.*"))), None)
    if root is None or root == path:
        return None
    run, step = RunDir(root), path.relative_to(root).parts[0]
    done = run.done_steps()
    if step not in done or (run.marker_info(step) or {}).get("output") != DECISIONS:
        return None
    text = [s for s in done[:done.index(step)]
            if get(s).carries_text and (run.marker_info(s) or {}).get("output") == ROWS]
    if not text:
        raise UserError(f"{path} holds decisions (ids, no text) of the {step} step, but no step before it in "
                         f"{root} wrote rows with their text (markers: {', '.join(done)}); the run is incomplete: "
                         "re-run `ray-jobs run` with its config")
    return run.kept_path(text[-1])


def attach(rows: pa.Table, extra: pa.Table) -> pa.Table:
    """`rows` in their order with the columns of `extra` they lack, matched on id (null where `extra` has none)."""
    pos = pc.index_in(rows[schema.ID], value_set=extra[schema.ID])
    for col in extra.column_names:
        if col not in rows.column_names:
            rows = rows.append_column(col, extra[col].take(pos))
    return rows


def cluster_members(stage_dir: str | Path, cluster_id: str) -> tuple[pa.Table, list[float]]:
    """The rows of one near-dedup cluster (representative first) and each one's exact Jaccard similarity to the
    representative over the shingles the run used. `cluster_id` "largest" picks the largest cluster."""
    from ray_jobs.steps.dedup.minhash import MinHashConfig, shingle_set  # numpy/numba: only when asked for

    d = Path(stage_dir)
    if not (d / "_clusters").is_dir():
        raise UserError(f"{d} has no _clusters folder; give the dedup stage folder of a run with near dedup "
                         "(RUN/dedup)")
    if cluster_id == "largest":
        sizes = pads.dataset(str(d / "_cluster_sizes"), format="parquet").to_table()
        if not len(sizes):
            raise UserError(f"{d} holds no near-duplicate cluster")
        cluster_id = sizes.sort_by([("size", "descending"), ("cluster_id", "ascending")])["cluster_id"][0].as_py()
    ids = pads.dataset(str(d / "_clusters"), format="parquet").to_table(
        columns=[schema.ID], filter=pc.field("cluster_id") == cluster_id)[schema.ID]
    rows = pads.dataset(str(d), format="parquet", partitioning="hive").to_table(filter=pc.field(schema.ID).isin(ids))
    rows = with_text(d, rows)
    if not len(rows):
        raise UserError(f"no cluster {cluster_id!r} under {d}; `ray-jobs inspect {d} --cluster largest` shows one")
    rep_first = pc.sort_indices(pa.table({"r": pc.not_equal(rows[schema.ID], cluster_id), "id": rows[schema.ID]}),
                                [("r", "ascending"), ("id", "ascending")])
    rows = rows.take(rep_first)
    cfg = _run_minhash_config(d) or MinHashConfig()
    sets = [shingle_set(t or "", cfg) for t in rows[schema.TEXT].to_pylist()]
    sims = [len(sets[0] & s) / max(len(sets[0] | s), 1) for s in sets]
    return rows, sims


def _run_minhash_config(stage_dir: Path):
    """The shingling the run used, from RUN/config.toml, when there is one."""
    from ray_jobs.config import load_config

    cfg_path = stage_dir.parent / "config.toml"
    return load_config(cfg_path).dedup.near if cfg_path.is_file() else None


def format_cluster(rows: pa.Table, sims: list[float], width: int = 120) -> str:
    """Each member side by side with the representative (left), with its Jaccard similarity."""
    col = (width - 3) // 2
    rep = rows.slice(0, 1).to_pylist()[0]
    out = [f"cluster {rep[schema.ID]}: {len(rows)} documents"]
    for row, sim in zip(rows.slice(1).to_pylist(), sims[1:]):
        out += ["", f"{'representative ' + rep[schema.ID]:<{col}} | {row[schema.ID]}  "
                    f"status={row.get(schema.STATUS)}  jaccard={sim:.3f}"]
        left = textwrap.wrap(textwrap.shorten(rep[schema.TEXT] or "", 600, placeholder=" …"), col)
        right = textwrap.wrap(textwrap.shorten(row[schema.TEXT] or "", 600, placeholder=" …"), col)
        for i in range(max(len(left), len(right))):
            out.append(f"{left[i] if i < len(left) else '':<{col}} | {right[i] if i < len(right) else ''}")
    return "\n".join(out)


def format_rows(table: pa.Table, width: int = 100) -> str:
    out = []
    for row in table.to_pylist():
        text = row.pop(schema.TEXT, None)
        head = "  ".join(f"{k}={_short(v)}" for k, v in row.items() if k in SHOWN)
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
