"""The dataset checklist: pure functions from what scan.py read out of a run directory to check results.

Each check says pass, fail, warn or skip (does not apply to this run) with the numbers behind it, and for a fail
what to do; a figure from the bounded text scan says when it is a sample. The checks of the steps (quality filters,
dedup, split after dedup, and any step registered with a `check`) are reached through the registry: each step's
spec calls its function here. `run_checks(run_dir)` reads the run and runs them all; report.html shows them first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray_jobs.report.scan import (
    NO_SPLIT,
    SPOT_CHECK_SEED,
    RowScan,
    RunData,
    TextScan,
    TokenScan,
    gather,
    normalize_config,
)
from ray_jobs.steps import registry
from ray_jobs.steps.clean.normalize import NormalizeConfig
from ray_jobs.steps.clean.quality import DEFAULT_OFF, REASONS

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
# A class under 1 % of the rows leaves ~0-2 rows of it in a 5 % val/test split of a few thousand: too few to
# learn or to measure.
MIN_CLASS_SHARE = 0.01
# A split whose class shares differ from the overall shares by more than 2 points evaluates a different mix than
# the one trained on. A stratified split is exact to within one row per class, so a split of n rows is allowed
# 1/n more: the sample's 33-row test split holds 'book' 12 times for a target of 11.3 (36.4 % vs 33.6 %).
MAX_SPLIT_DRIFT = 0.02
# More than 1 % of documents cut at tokenize.max_length loses their ends silently.
MAX_TRUNCATED_SHARE = 0.01
INGEST_ONLY = "ingest run (no text stage): `ray-jobs run --input RUN/ingest/<modality>/status=kept` runs it"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # PASS | FAIL | WARN | SKIP
    detail: str


def run_checks(run_dir: str | Path) -> list[Check]:
    return dataset_checks(gather(run_dir))


def dataset_checks(data: RunData) -> list[Check]:
    """The dataset's checks around those of its steps: every registered step with a `check` that finished in
    this run or that its config enables (a required step that did not finish fails or warns in its own check)."""
    steps = [s for s in registry.steps()
             if s.check is not None and (s.name in data.markers or s.enabled(data.run_config))]
    return [
        no_missing_text(data.rows, data.text, _where(data)),
        normalised(data.text, normalize_config(data.config)),
        *(s.check(data) for s in steps),
        label_distribution(data.rows),
        length_distribution(data.text, data.tokens),
        spot_check(data.rows),
        stats_recomputable(data.stats, data.stats_now),
        manifest_matches(data.manifest, data.manifest_now),
    ]


def _where(data: RunData) -> str:
    return data.rows.final.where(data.run.root) if data.rows else "no final rows"


def no_missing_text(rows: RowScan | None, text: TextScan | None, where: str) -> Check:
    """Labels over every final row; texts over the scanned ones (all, or a sample)."""
    name = "no null or empty text / label"
    if rows is None or text is None:
        return Check(name, SKIP, "no final rows: no text stage finished and nothing was ingested")
    if not rows.rows:
        return Check(name, FAIL, f"the final rows ({where}) are empty: every row was dropped or none was read; "
                                 "see the drops by reason below")
    label = ""
    if rows.label_column:
        absent = " (the column is absent)" if rows.label_column not in rows.columns else ""
        label = f"; label {rows.label_column!r}: {rows.null_label:,} null or empty of all rows{absent}"
    texts = f"{text.null_text:,} null and {text.empty_text:,} empty or whitespace-only texts of "
    texts += f"{rows.rows:,} rows" if text.coverage.complete else \
        f"{text.rows:,} rows scanned{text.where()} of the {rows.rows:,} rows"
    detail = f"{texts} in {where}{label}"
    if text.null_text + text.empty_text + rows.null_label:
        return Check(name, FAIL, detail + "; fix: run the clean stage on them (its `empty` rule drops empty "
                                          "texts) and give every row a label")
    return Check(name, PASS, detail)


def normalised(text: TextScan | None, norm: NormalizeConfig) -> Check:
    name = "whitespace and Unicode normalised"
    if text is None or not text.rows:
        return Check(name, SKIP, "no final rows to check")
    how = f"clean.normalize: unicode_form={norm.unicode_form}, collapse_whitespace={norm.collapse_whitespace}"
    detail = f"{text.changed_by_normalize:,} of {text.rows:,} texts change under the normaliser{text.where()} ({how})"
    if text.changed_by_normalize:
        return Check(name, FAIL, f"{detail}, e.g. {', '.join(text.changed_ids)}; fix: run the clean stage on "
                                 "these rows (`ray-jobs clean --input ...`), which normalises every text")
    if norm.unicode_form == "none" and not norm.collapse_whitespace:
        return Check(name, WARN, f"{detail}, but this run turned both Unicode forms and whitespace folding off: "
                                 "only line ends and invisible characters were checked")
    return Check(name, PASS, detail)


def _stage_gate(name: str, stage: str, stats: dict[str, Any] | None, text_run: bool, fix: str) -> Check | None:
    """SKIP on an ingest-only run, FAIL when `stage` did not finish; None when the check can look at `stats`."""
    if not text_run:
        return Check(name, SKIP, INGEST_ONLY)
    if stats is None:
        return Check(name, FAIL, f"the {stage} stage did not finish in this run (no _SUCCESS.{stage}){fix}")
    return None


def quality_filters(config: dict[str, Any], clean: dict[str, Any] | None, text_run: bool) -> Check:
    name = "quality filters applied"
    if gate := _stage_gate(name, "clean", clean, text_run, ", so nothing here was quality-filtered; fix: "
                                                           "`ray-jobs run` (or `ray-jobs clean`) on the input"):
        return gate
    section = config.get("clean", {})
    enabled = section.get("quality", {}).get("enabled", [r for r in REASONS if r not in DEFAULT_OFF])
    off = [r for r in REASONS if r not in enabled and r not in DEFAULT_OFF]  # default rules someone turned off
    dropped = sum(clean["dropped"].values())
    top = ", ".join(f"{r} {n:,}" for r, n in Counter(clean["dropped"]).most_common(4))
    langs = ", ".join(section.get("allowed_langs", [])) or "any"
    detail = (f"{len(enabled)} of {len(REASONS)} rules on, languages {langs}; {dropped:,} of "
              f"{clean['rows_in']:,} rows dropped ({top or 'none'})")
    if section.get("c4_lines", {}).get("enabled"):
        detail += f"; C4 line filters removed {clean.get('c4_lines_removed', 0):,} lines"
    pii = section.get("pii", {})
    if pii.get("enabled", True):
        kinds = ", ".join(pii.get("redact", ["email", "ip"]))
        detail += f"; PII redacted ({kinds}): {clean.get('pii_redacted', 0):,}"
    if not enabled:
        return Check(name, FAIL, f"every quality rule is off (clean.quality.enabled = []); {detail}")
    if off:
        return Check(name, WARN, f"{detail}; off: {', '.join(off)}")
    return Check(name, PASS, detail)


def deduplicated(config: dict[str, Any], dedup: dict[str, Any] | None, text_run: bool) -> Check:
    name = "exact and near dedup done"
    if gate := _stage_gate(name, "dedup", dedup, text_run, "; fix: `ray-jobs run` (or `ray-jobs dedup`) on the "
                                                           "cleaned rows"):
        return gate
    section = config.get("dedup", {})
    method = section.get("method", "near")
    dropped = dedup["dropped"]
    clusters = sum(n for size, n in dedup.get("cluster_sizes", {}).items() if size != "1")
    detail = (f"{dropped.get('exact_duplicate', 0):,} exact and {dropped.get('near_duplicate', 0):,} near "
              f"duplicates dropped of {dedup['rows_in']:,} rows; {clusters:,} near-duplicate clusters of 2 or more")
    if method == "near":
        near = section.get("near", {})
        return Check(name, PASS, f"{detail} (MinHash-LSH candidates, verified by {near.get('verify')}, Jaccard "
                                 f"threshold {near.get('threshold')})")
    if method == "off":
        return Check(name, FAIL, "dedup ran with dedup.method = \"off\": nothing was deduplicated; fix: set "
                                 "dedup.method = \"near\" and re-run with --force")
    return Check(name, WARN, f"dedup.method = \"exact\": only identical texts were looked for; {detail}")


def split_after_dedup(config: dict[str, Any], markers: dict[str, dict[str, Any]],
                      leakage: dict[str, Any] | None, text_run: bool) -> Check:
    name = "split after dedup"
    if not text_run:
        return Check(name, SKIP, INGEST_ONLY)
    if "split" not in markers:
        return Check(name, WARN, "no split stage finished: the dataset has no held-out rows")
    if "dedup" not in markers:
        return Check(name, FAIL, "split finished but dedup did not run in this run: duplicates can straddle train "
                                 "and test; fix: `ray-jobs run` (dedup runs before split)")
    split_t, dedup_t = markers["split"]["finished"], markers["dedup"]["finished"]
    if split_t <= dedup_t:
        return Check(name, FAIL, f"split finished at {utc(split_t)}, before dedup at {utc(dedup_t)}: its rows "
                                 "are not the deduplicated ones; fix: `ray-jobs run --force` to redo dedup, then split")
    sp = config.get("split")
    if not sp:
        return Check(name, FAIL, "config.toml has no [split] section: how the split was made is not recorded; fix: "
                                 "re-run `ray-jobs run --force` (it writes the resolved config)")
    how = f"{sp['train']:.0%}/{sp['val']:.0%}/{sp['test']:.0%} by xxh3({sp['group_by']}, seed {sp['seed']})"
    how += f", stratified by {sp['stratify_by']}" if sp.get("stratify_by") else ""
    pairs = ""
    if leakage is not None:
        pairs = f"; leakage: {sum(leakage.get('leakage_pairs', {}).values()):,} cross-split near-duplicate pairs"
    return Check(name, PASS, f"split finished {split_t - dedup_t:.1f} s after dedup; {how}{pairs}")


def label_distribution(rows: RowScan | None) -> Check:
    name = "label distribution checked"
    if rows is None or not rows.label_column:
        return Check(name, SKIP, "no label column (labels.label_column, split.stratify_by or a `label` column)")
    overall: Counter = Counter()
    per_split: dict[str, Counter] = {}
    for (split, label), n in rows.label_split.items():
        overall[label] += n
        per_split.setdefault(split, Counter())[label] += n
    total = sum(overall.values())
    if not total:
        return Check(name, SKIP, "the final rows are empty")
    share = {label: n / total for label, n in overall.items()}
    rare = sorted((s, label) for label, s in share.items() if s < MIN_CLASS_SHARE)
    gaps = sorted(((abs(c[label] / sum(c.values()) - s), split, label, c[label] / sum(c.values()),
                    MAX_SPLIT_DRIFT + 1 / sum(c.values()))
                   for split, c in per_split.items() if split != NO_SPLIT for label, s in share.items()),
                  reverse=True)
    lo, hi = min(share.values()), max(share.values())
    detail = f"{len(share)} classes, {lo:.1%} to {hi:.1%} of {total:,} rows"
    problems = [f"{label!r} is {s:.2%} of the rows (under {MIN_CLASS_SHARE:.0%})" for s, label in rare]
    problems += [f"{split} has {label!r} at {got:.1%} vs {share[label]:.1%} overall"
                 for gap, split, label, got, allowed in gaps if gap > allowed]
    if problems:
        return Check(name, WARN, f"{detail}; " + "; ".join(problems[:6]) +
                     (f"; and {len(problems) - 6} more" if len(problems) > 6 else ""))
    if gaps:
        gap, split, label, _, _ = gaps[0]
        detail += (f"; every split within {MAX_SPLIT_DRIFT * 100:.0f} points (+ one row) of the overall shares "
                   f"(largest gap {gap * 100:.1f} points: {split} {label!r})")
    return Check(name, PASS, detail)


def length_distribution(text: TextScan | None, tokens: TokenScan | None) -> Check:
    name = "output length distribution checked"
    if text is None or not text.rows:
        return Check(name, SKIP, "no final rows")
    detail = "characters " + _quantiles(text.chars.overall) + text.where()
    if tokens is None:
        return Check(name, PASS, detail + "; no token rows in this run (tokenize and pack)")
    detail += f"; tokens {_quantiles(tokens.tokens.overall)} over all {tokens.rows:,} documents ({tokens.source})"
    if tokens.truncated is None:
        return Check(name, PASS, f"{detail}; documents cut at tokenize.max_length: not recorded (only the token "
                                 "rows count them, and this run did not keep them: output.keep = [\"tokenize\"])")
    if tokens.truncated > MAX_TRUNCATED_SHARE * tokens.rows:
        return Check(name, WARN, f"{detail}; tokenize cut {tokens.truncated:,} of {tokens.rows:,} documents at "
                                 "tokenize.max_length: their ends are lost (set it to 0 and let packing split them)")
    return Check(name, PASS, f"{detail}; {tokens.truncated:,} documents cut at tokenize.max_length")


def _quantiles(h) -> str:
    mean = h.total / h.n if h.n else 0
    return f"median ≤ {h.quantile(0.5):,.0f}, p99 ≤ {h.quantile(0.99):,.0f}, max {h.max:,}, mean {mean:,.0f}"


def spot_check(rows: RowScan | None) -> Check:
    name = "random spot-check sample"
    if rows is None or not rows.sample:
        return Check(name, SKIP, "no final rows to sample")
    return Check(name, PASS, f"{len(rows.sample)} of {rows.rows:,} rows, those with the smallest "
                             f"xxh3_64(id, seed {SPOT_CHECK_SEED:#x}): read them under 'Spot check'")


def stats_recomputable(stats: dict[str, Any] | None, stats_now: dict[str, Any]) -> Check:
    name = "stats.json recomputed from the files"
    if not stats_now["stages"]:
        return Check(name, SKIP, "no pipeline stage finished: nothing to count")
    if stats is None:
        return Check(name, FAIL, "no stats.json; fix: re-run `ray-jobs run` with the same config (finished stages "
                                 "are skipped) to write it")
    differ = [s for s in stats_now["stages"].keys() | stats["stages"].keys()
              if stats["stages"].get(s) != stats_now["stages"].get(s)]
    if differ:
        return Check(name, FAIL, f"stats.json differs from the files for {', '.join(sorted(differ))}: a stage "
                                 "folder changed after the run; fix: re-run `ray-jobs run` to rewrite it")
    if not stats_now["invariant_ok"]:
        broken = [s for s, v in stats_now["stages"].items() if not v["invariant_ok"]]
        return Check(name, FAIL, f"rows_in != rows_out + dropped + quarantined for {', '.join(broken)}")
    n = len(stats_now["stages"])
    return Check(name, PASS, f"{n} stage{'s' if n > 1 else ''} equal to a recount; rows_in == rows_out + dropped + "
                             "quarantined holds for each")


def manifest_matches(manifest: dict[str, Any] | None, now: list[dict[str, Any]]) -> Check:
    name = "versioned with a manifest"
    if manifest is None:
        if not now:
            return Check(name, SKIP, "no final files")
        return Check(name, FAIL, f"no manifest.json for the {len(now)} final files; fix: re-run `ray-jobs run` (or "
                                 "`ray-jobs ingest`) with the same config: finished stages are skipped, the "
                                 "manifest is written at the end")
    listed = {f["path"]: f for f in manifest["files"]}
    found = {f["path"]: f for f in now}
    problems = [f"changed {p} ({', '.join(k for k in ('rows', 'bytes', 'sha256') if listed[p][k] != found[p][k])})"
                for p in sorted(listed.keys() & found.keys()) if listed[p] != found[p]]
    problems += [f"missing {p}" for p in sorted(listed.keys() - found.keys())]
    problems += [f"not listed {p}" for p in sorted(found.keys() - listed.keys())]
    config = manifest["config_fingerprint"] or "no config.toml"
    what = f"manifest.json (ray_jobs {manifest['ray_jobs_version']}, config {config}) lists {len(listed)} Parquet files"
    if problems:
        return Check(name, FAIL, f"{what}; {len(problems)} differ from the files: " + "; ".join(problems[:5]) +
                     "; fix: re-run the job that wrote them (its manifest is rewritten) or restore the files")
    return Check(name, PASS, f"{what}, {sum(f['bytes'] for f in now):,} bytes: rows, sizes and sha256 match")


def utc(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def decontaminated(config: dict[str, Any], decontam: dict[str, Any] | None, text_run: bool) -> Check:
    """decontam's outcome: rows sharing a word n-gram with an eval item, per eval file (stats' contaminated_by_set).
    Dropped: pass. Only flagged (action = "flag"): a warning, since they are still in the training rows."""
    name = "decontaminated against eval sets (n-grams)"
    if gate := _stage_gate(name, "decontam", decontam, text_run, "; fix: `ray-jobs run` with decontam.eval_paths "
                                                                 "set (or `ray-jobs decontam`) on the kept rows"):
        return gate
    section = config.get("decontam", {})
    by_set = decontam.get("contaminated_by_set")
    what = (f"of {decontam['rows_in']:,} rows share a {section.get('ngram')}-word n-gram with an item of "
            f"{', '.join(section.get('eval_paths', [])) or 'the eval sets'}")
    sets = "; " + ", ".join(f"{k} {v:,}" for k, v in Counter(by_set).most_common(5)) if by_set else ""
    if section.get("action") == "flag":
        if by_set is None:
            return Check(name, WARN, "decontam.action = \"flag\": the flagged rows went on into the packed rows and "
                                     "are on disk nowhere else, so they are not counted; fix: output.keep = "
                                     "[\"decontam\"] (their rows written) or decontam.action = \"drop\"")
        flagged = sum(by_set.values())
        detail = f"{flagged:,} {what}{sets}"
        if flagged:
            return Check(name, WARN, f"{detail}: only flagged (decontam_item names the item), still in the "
                                     "training rows; fix: decontam.action = \"drop\"")
        return Check(name, PASS, detail)
    return Check(name, PASS, f"{decontam['dropped'].get('contaminated', 0):,} {what}, dropped{sets}")
