"""RUN/report.html: one self-contained page per run, made from the run directory's files alone.

The checklist first (checks.py), then the stage table and the plots, each from files of the run: drops by reason
and near-duplicate cluster sizes (stats.json), labels per split (every final row's label and split columns),
characters per document (the bounded text scan: the header says whether it read all the text or a sample),
tokens per document (the token rows, else the packed rows' doc_lens), the language mix (every clean row's `lang`),
label-issue suspects (RUN/labels/), ingested rows per modality and status (RUN/ingest/), and a seeded 64-row spot
check. A plot whose data this run does not have is replaced by one line saying why.

Plots are matplotlib `Figure`s saved as SVG and inlined: no pyplot (no global backend, nothing to close), no
JavaScript, no web fonts (glyphs are SVG paths), nothing fetched. Each SVG's ids get a per-plot prefix, since
matplotlib names glyphs and clip paths alike in every figure and ids must be unique in one HTML document.
"""

from __future__ import annotations

import io
import json
import logging
import re
import textwrap
import time
from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from ray_jobs import __version__, schema
from ray_jobs.report.checks import Check, dataset_checks, utc
from ray_jobs.report.scan import (
    LABELS_SUMMARY,
    LANG,
    LENGTH_EDGES,
    NO_SPLIT,
    SPOT_CHECK_SEED,
    Lengths,
    RunData,
    gather,
)
from ray_jobs.report.summary import stage_detail
from ray_jobs.rundir import RunDir, write_atomic
from ray_jobs.rundir.manifest import write_manifest
from ray_jobs.rundir.stats import write_stats

log = logging.getLogger("ray_jobs")

REPORT = "report.html"
WIDTH = 7.5  # inches: 720 px at 96 dpi, the page's content width
TOP_LABELS = 20  # classes shown in the label plot (the rest as "other")
TOP_LENGTH_LABELS = 8  # per-label length curves beyond this are unreadable
TOP_LANGS = 12
SPLIT_ORDER = ("train", "val", "test", NO_SPLIT)
COLORS = matplotlib.colormaps["tab10"].colors
STATUS_COLORS = {"pass": "#1a7f37", "fail": "#cf222e", "warn": "#9a6700", "skip": "#6e7781"}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0 auto;
       max-width: 980px; padding: 1.5em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; color: #57606a; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; width: 100%; font-size: .9em; margin: .5em 0; }
th, td { border: 1px solid #d0d7de; padding: .3em .5em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.text { font-size: .85em; white-space: pre-wrap; word-break: break-word; }
.badge { color: #fff; border-radius: 1em; padding: .05em .6em; font-weight: 600; font-size: .85em; }
""" + "".join(f"tr.{s} .badge {{ background: {c}; }} tr.{s} {{ border-left: 4px solid {c}; }}\n"
              for s, c in STATUS_COLORS.items()) + """
figure { margin: 1em 0; } figcaption { color: #57606a; font-size: .9em; }
figure svg { max-width: 100%; height: auto; display: block; }
p.absent { color: #57606a; font-style: italic; }
details summary { cursor: pointer; font-weight: 600; }
"""


def write_report(run_dir: str | Path) -> Path:
    """Read the run directory, run the checklist, write RUN/report.html atomically; returns its path."""
    start = time.perf_counter()
    data = gather(run_dir)
    path = data.run.root / REPORT
    write_atomic(path, render(data, dataset_checks(data)))
    log.info("report: %s (%.1f s)", path, time.perf_counter() - start)
    return path


def close_run(run: RunDir) -> dict[str, Any]:
    """What every run ends with, from the files alone: stats.json, manifest.json and report.html (also when the
    invariant is broken: the page shows where); returns the stats."""
    stats = write_stats(run)
    write_manifest(run)
    write_report(run.root)
    return stats


def render(data: RunData, checks: list[Check]) -> str:
    sections = [
        _section("checklist", "Dataset checklist", _checks_table(checks)),
        _section("stages", "Stages", _stages(data)),
        _section("labels", "Labels per split", _labels(data)),
        _section("lengths", "Lengths", _lengths(data)),
        _section("languages", "Language mix", _languages(data)),
        _section("duplicates", "Near-duplicate clusters", _clusters(data)),
        _section("label-issues", "Label-issue suspects", _label_issues(data)),
        _section("ingest", "Ingested rows", _ingest(data)),
        _section("spot-check", "Spot check", _spot_check(data)),
    ]
    title = f"ray-jobs report: {data.run.root.name}"
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{escape(title)}</h1>\n{_meta(data)}\n</header>\n"
            + "\n".join(sections) + "\n</body>\n</html>\n")


def _meta(data: RunData) -> str:
    finished = [m["finished"] for m in data.markers.values()]
    items = [
        ("run directory", str(data.run.root)),
        ("report written", utc(time.time())),
        ("last stage finished", utc(max(finished)) if finished else "no stage marker"),
        ("config fingerprint", data.config_fingerprint or "no config.toml"),
        ("final rows", f"{data.rows.rows:,} rows: {data.rows.final.where(data.run.root)}" if data.rows else "none"),
        ("text scanned", data.text.coverage.describe() if data.text else "none"),
        ("ray_jobs", __version__),
    ]
    return '<dl class="meta">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def _absent(key: str, why: str) -> str:
    return f'<p class="absent" id="absent-{key}">{escape(why)}</p>'


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    """An HTML table; cells are escaped, `classes` gives each column's td class (num, text)."""
    classes = classes or [""] * len(header)
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
    body = ["<tr>" + "".join(f'<td class="{c}">{escape(_cell(v))}</td>' if c else f"<td>{escape(_cell(v))}</td>"
                             for v, c in zip(row, classes)) + "</tr>" for row in rows]
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>"


def _cell(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3g}"  # p(given) of a suspect is often below 0.001
    # nested summary values (per-class dicts, a confusion matrix) as JSON, cut for 1000-class runs
    return v if isinstance(v, str) else _short(json.dumps(v, default=str), 400)


def _checks_table(checks: list[Check]) -> str:
    counts = Counter(c.status for c in checks)
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUS_COLORS if counts[s])
    rows = "\n".join(f'<tr class="check {c.status}"><td>{escape(c.name)}</td>'
                     f'<td><span class="badge">{c.status}</span></td><td>{escape(c.detail)}</td></tr>'
                     for c in checks)
    return (f"<p>{summary}.</p>\n<table>\n<thead><tr><th>check</th><th>status</th><th>detail</th></tr></thead>\n"
            f"<tbody>\n{rows}\n</tbody>\n</table>")


def _stages(data: RunData) -> str:
    if not data.stats:
        return _absent("stages", "No stats.json: no pipeline stage finished in this run.")
    stages = data.stats["stages"]
    rows = [[name, s["rows_in"], s["rows_out"], sum(s["dropped"].values()), s["quarantined"], stage_detail(s)]
            for name, s in stages.items()]
    out = _table(["stage", "rows in", "rows out", "dropped", "quarantined", "detail"], rows,
                 ["", "num", "num", "num", "num", ""])
    if "packing" in stages.get("pack", {}):
        pk = stages["pack"]["packing"]
        slots = pk["packed_tokens"] + pk["padding_tokens"]
        out += (f"\n<p id=\"packing\">Packing: {pk['efficiency']:.1%} of {slots:,} token slots "
                f"({stages['pack']['rows_out']:,} rows of {pk['seq_len']:,}) hold document tokens; "
                f"{pk['padding_tokens']:,} padding, {pk['cropped_tokens']:,} cropped.</p>")
    drops = [(stage, reason, n) for stage, s in stages.items()
             for reason, n in sorted({**s["dropped"], "quarantined": s["quarantined"]}.items(), key=lambda kv: -kv[1])
             if n]
    if not drops:
        return out + "\n" + _absent("drops", "No row was dropped or quarantined by any stage.")
    return out + "\n" + _figure("drops", _plot_drops(drops), f"Rows dropped by reason per stage (stats.json): "
                                f"{sum(n for *_, n in drops):,} rows in all.")


def _labels(data: RunData) -> str:
    rows = data.rows
    if rows is None or not rows.label_column:
        return _absent("labels", "No label column: the config names none (labels.label_column, split.stratify_by) "
                                 "and the final rows have no `label` column.")
    per_split: dict[str, Counter] = {}
    for (split, label), n in rows.label_split.items():
        per_split.setdefault(split, Counter())[label] += n
    splits = sorted(per_split, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
    caption = (f"Share of each class of `{rows.label_column}` within each split (final rows): "
               + "; ".join(f"{s} {sum(per_split[s].values()):,} rows" for s in splits) + ".")
    return _figure("labels", _plot_label_splits(per_split, splits), caption)


def _lengths(data: RunData) -> str:
    if data.text is None or not data.text.rows:
        return _absent("lengths", "No final rows.")
    text = data.text
    out = _figure("chars", _plot_lengths(text.chars, "characters per document"),
                  f"Characters per document of the final rows ({text.rows:,} rows; {text.coverage.describe()}), "
                  "overall and per label (share of rows per bin, 8 bins per decade).")
    if data.tokens is None:
        return out + "\n" + _absent("tokens", "No token rows in this run (tokenize, pack): no token counts.")
    return out + "\n" + _figure("tokens", _plot_lengths(data.tokens.tokens, "tokens per document"),
                                f"Tokens per document ({data.tokens.source}, all {data.tokens.rows:,} "
                                "documents), overall and per label.")


def _languages(data: RunData) -> str:
    if data.langs is None:
        return _absent("languages", "No finished clean stage with a `lang` column: no language mix.")
    total = sum(data.langs.values())
    kept = sum(n for (_, status), n in data.langs.items() if status == schema.KEPT)
    return _figure("languages", _plot_langs(data.langs),
                   f"Detected language of every row the clean stage saw ({total:,} rows, {kept:,} kept).")


def _clusters(data: RunData) -> str:
    sizes = ((data.stats or {}).get("stages", {}).get("dedup") or {}).get("cluster_sizes")
    if not sizes:
        return _absent("duplicates", "No near-dedup cluster sizes in stats.json (no dedup stage, or near dedup off).")
    multi = sum(n for k, n in sizes.items() if k != "1")
    return _figure("clusters", _plot_clusters(sizes),
                   f"Documents per near-duplicate cluster (stats.json): {multi:,} clusters of 2 or more; a "
                   "cluster keeps one document.")


def _label_issues(data: RunData) -> str:
    out = []
    if data.issues_top is None:
        out.append(_absent("label-issues", "No finished labels stage in this run (`ray-jobs labels`, or "
                                           "labels.enabled = true in `ray-jobs run`): no suspects."))
    elif not data.issues_top:
        out.append(_absent("label-issues", "The labels stage flagged no row."))
    else:
        total = sum(data.issues_per_label.values())
        out.append(_figure("issues", _plot_issue_labels(data.issues_per_label),
                           f"Label-issue suspects per given label ({total:,} suspects)."))
        rows = [[r.get("rank"), r.get(schema.ID), r.get("label"), r.get("predicted_label"), r.get("p_given"),
                 r.get("quality"), _short(r.get(schema.TEXT), 240)] for r in data.issues_top]
        out.append(f"<p>The {len(rows)} most suspect rows (rank 1 = most suspect) of {total:,}:</p>")
        out.append(_table(["rank", "id", "given", "predicted", "p(given)", "quality", "text"], rows,
                          ["num", "", "", "", "num", "num", "text"]))
    if data.labels_summary is not None:
        out.append(f"<p>{escape(LABELS_SUMMARY.as_posix())}:</p>")
        out.append(_table(["key", "value"], [[k, v] for k, v in data.labels_summary.items()]))
    return "\n".join(out)


def _ingest(data: RunData) -> str:
    if not data.ingest:
        return _absent("ingest", "Not an ingest run (no RUN/ingest/): no per-modality counts.")
    statuses = sorted({s for c in data.ingest.values() for s in c}, key=lambda s: (s != schema.KEPT, s))
    rows = [[m, *[c.get(s, 0) for s in statuses], sum(c.values())] for m, c in data.ingest.items()]
    return (_figure("ingest", _plot_ingest(data.ingest, statuses), "Ingested rows per modality and status "
                    "(Parquet footers of RUN/ingest/<modality>/status=*/).") + "\n"
            + _table(["modality", *statuses, "total"], rows, ["", *["num"] * (len(statuses) + 1)]))


def _spot_check(data: RunData) -> str:
    if data.rows is None or not data.rows.sample:
        return _absent("spot-check", "No final rows to sample.")
    extra = [c for c in (schema.SPLIT, data.rows.label_column, LANG) if c and c in data.rows.columns]
    rows = [[r[schema.ID], *[r.get(c) for c in extra], r["chars"], _short(r[schema.TEXT], 400)]
            for r in data.rows.sample]
    return (f"<details>\n<summary>{len(rows)} of {data.rows.rows:,} final rows, chosen by the smallest "
            f"xxh3_64(id, seed {SPOT_CHECK_SEED:#x}): the same rows on every report of the same data</summary>\n"
            + _table(["id", *extra, "chars", "text"], rows, ["", *[""] * len(extra), "num", "text"])
            + "\n</details>")


def _short(text: str | None, width: int) -> str:
    # cut first: textwrap.shorten splits the whole text into words
    return textwrap.shorten((text or "")[: width * 4], width, placeholder=" …") or "(empty)"


# ----------------------------------------------------------------------------------------------------- plots


def _figure(key: str, fig: Figure, caption: str) -> str:
    return f'<figure id="plot-{key}">\n{_svg(fig, key, caption)}\n<figcaption>{escape(caption)}</figcaption>\n</figure>'


def _svg(fig: Figure, key: str, label: str) -> str:
    """The figure as inline SVG: no XML prolog or metadata, ids prefixed with `key` (unique in the page), and
    deterministic (fixed hash salt, no date) so the same run gives the same page."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": key, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{key}-\1"', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{key}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{key}-\1)", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" ', 1).strip()


def _new_figure(height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH, height), layout="constrained")
    ax = fig.subplots()
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _legend(ax: Any) -> None:
    """Outside the axes, on the right: inside, it hid bars and curves (one long bar fills the whole width)."""
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _bar_height(n: int) -> float:
    return 1.0 + 0.28 * n  # inches: ~20 px per horizontal bar plus the axis


def _plot_drops(drops: list[tuple[str, str, int]]) -> Figure:
    fig, ax = _new_figure(_bar_height(len(drops)))
    stage_color = {s: COLORS[i % len(COLORS)] for i, s in enumerate(dict.fromkeys(s for s, _, _ in drops))}
    y = np.arange(len(drops))[::-1]
    bars = ax.barh(y, [n for *_, n in drops], color=[stage_color[s] for s, _, _ in drops])
    ax.set_yticks(y, [f"{s}: {r}" for s, r, _ in drops])
    ax.bar_label(bars, labels=[f"{n:,}" for *_, n in drops], padding=3, fontsize=8)
    ax.set_xlabel("rows")
    ax.margins(x=0.12)
    return fig


def _plot_label_splits(per_split: dict[str, Counter], splits: list[str]) -> Figure:
    overall = sum(per_split.values(), Counter())
    labels = [label for label, _ in overall.most_common(TOP_LABELS)]
    rest = len(overall) > TOP_LABELS
    names = labels + (["other"] if rest else [])
    fig, ax = _new_figure(3.4)
    width = 0.8 / len(splits)
    x = np.arange(len(names))
    for i, split in enumerate(splits):
        c = per_split[split]
        n = sum(c.values())
        shares = [c[label] / n for label in labels] + ([1 - sum(c[lb] for lb in labels) / n] if rest else [])
        ax.bar(x + (i - (len(splits) - 1) / 2) * width, np.array(shares) * 100, width, label=f"{split} ({n:,})",
               color=COLORS[i % len(COLORS)])
    ax.set_xticks(x, [str(n) for n in names], rotation=30 if len(names) > 6 else 0, ha="right" if len(names) > 6
                  else "center")
    ax.set_ylabel("% of the split's rows")
    _legend(ax)
    return fig


def _plot_lengths(lengths: Lengths, xlabel: str) -> Figure:
    fig, ax = _new_figure(3.2)
    overall = lengths.overall
    ax.stairs(overall.counts / max(overall.n, 1) * 100, LENGTH_EDGES, color="black", linewidth=2,
              label=f"all ({overall.n:,})")
    top = sorted(lengths.by_label.items(), key=lambda kv: -kv[1].n)[:TOP_LENGTH_LABELS]
    for i, (label, h) in enumerate(top):
        ax.stairs(h.counts / max(h.n, 1) * 100, LENGTH_EDGES, color=COLORS[i % len(COLORS)], linewidth=1.2,
                  label=f"{label} ({h.n:,})")
    used = np.nonzero(overall.counts)[0]
    if len(used):  # the decades that hold rows, not 1 to 10^7
        ax.set_xlim(LENGTH_EDGES[used[0]], LENGTH_EDGES[used[-1] + 1])
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("% of rows")
    _legend(ax)
    return fig


def _plot_langs(langs: Counter) -> Figure:
    total: Counter = Counter()
    kept: Counter = Counter()
    for (lang, status), n in langs.items():
        total[lang] += n
        kept[lang] += n if status == schema.KEPT else 0
    names = [lang for lang, _ in total.most_common(TOP_LANGS)]
    t, k = [total[lang] for lang in names], [kept[lang] for lang in names]
    if len(total) > TOP_LANGS:
        names, t, k = names + ["other"], t + [sum(total.values()) - sum(t)], k + [sum(kept.values()) - sum(k)]
    fig, ax = _new_figure(_bar_height(len(names)))
    y = np.arange(len(names))[::-1]
    ax.barh(y, k, color=COLORS[2], label="kept")
    bars = ax.barh(y, np.array(t) - np.array(k), left=k, color=COLORS[7], label="dropped")
    ax.bar_label(bars, labels=[f"{n:,}" for n in t], padding=3, fontsize=8)
    ax.set_yticks(y, [str(n) for n in names])
    ax.set_xlabel("rows (clean stage)")
    ax.margins(x=0.12)
    _legend(ax)
    return fig


def _plot_clusters(sizes: dict[str, int]) -> Figure:
    fig, ax = _new_figure(3.0)
    bars = ax.bar(list(sizes), list(sizes.values()), color=COLORS[0])
    ax.bar_label(bars, labels=[f"{n:,}" for n in sizes.values()], padding=2, fontsize=8)
    ax.set_yscale("log")  # size 1 (no duplicate) outnumbers the rest by 10-100x
    ax.set_xlabel("documents in the cluster")
    ax.set_ylabel("clusters")
    return fig


def _plot_issue_labels(per_label: Counter) -> Figure:
    items = per_label.most_common(TOP_LABELS)
    fig, ax = _new_figure(_bar_height(len(items)))
    y = np.arange(len(items))[::-1]
    bars = ax.barh(y, [n for _, n in items], color=COLORS[3])
    ax.bar_label(bars, labels=[f"{n:,}" for _, n in items], padding=3, fontsize=8)
    ax.set_yticks(y, [str(key[0]) for key, _ in items])
    ax.set_xlabel("suspects (given label)")
    ax.margins(x=0.12)
    return fig


def _plot_ingest(ingest: dict[str, dict[str, int]], statuses: list[str]) -> Figure:
    fig, ax = _new_figure(_bar_height(len(ingest)))
    y = np.arange(len(ingest))[::-1]
    left = np.zeros(len(ingest))
    for i, status in enumerate(statuses):
        n = np.array([c.get(status, 0) for c in ingest.values()])
        ax.barh(y, n, left=left, color=COLORS[2] if status == schema.KEPT else COLORS[(i + 3) % len(COLORS)],
                label=status)
        left += n
    ax.set_yticks(y, list(ingest))
    ax.set_xlabel("rows")
    _legend(ax)
    return fig

