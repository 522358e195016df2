"""Stage throughput: the project's Ray recipes against the same stage objects in a plain one-core Python loop.

    python benchmarks/stage_bench.py                  # 60 MB corpus, every stage: ~5 minutes on 2 cores
    python benchmarks/stage_bench.py --direct         # + the Ray-actors-without-Ray-Data control (~1 minute more)
    python benchmarks/stage_bench.py --sweep          # + Ray-only re-runs of the stages below target (~10 min total)
    python benchmarks/stage_bench.py --mb 170 --repeat 1 --no-stats --no-pair
    python benchmarks/stage_bench.py --stages dedup --set ray.shuffle_strategy=sort_shuffle_pull_based

Figures and analysis: benchmarks/RESULTS.md (stage throughput section). Everything measured also goes to
benchmarks/out/stage_bench.json (or --json), the ds.stats() text to benchmarks/out/stats/.

Corpus (built once, cached under benchmarks/out/corpus/<mb>mb-<files>files/, deterministic): Project Gutenberg books
(Dickens, Twain, Shakespeare) cut at blank lines into 2-5 kB documents, IMDB train reviews and SpamAssassin e-mails,
50 / 30 / 20 % of the text bytes (a source that runs short leaves its share to the others), in `--files` zstd Parquet
files with `id, text, source, label` (label: book, review_pos/neg, ham/spam).

For every stage variant (clean, dedup, split, split_strat = split stratified by `label`, tokenize):

* plain: a child process pinned to core 0 (one thread per library) reads the files with the project's reader
  (`io.formats.parse_file`, pyarrow underneath), applies the same stage objects batch by batch (`ray.batch_size`
  rows) and writes zstd Parquet partitioned like the recipe (status=/split= folders). dedup = ExactHashStage over
  every batch, then keep_lowest_id per bucket in memory; split = SplitKeyStage, the plan from ray_jobs.split's
  functions (stratified), AssignSplitStage. Best of --repeat runs.
* pair (clean, split, tokenize; --no-pair skips it): two plain children at once, one per core, half the files each:
  how far the hardware itself scales to 2 cores.
* ray: a child process runs `ray_jobs.jobs.pipeline.<stage>(cfg, run, input, force=True)` into a fresh run dir
  inside one `engine.ray_session` (ray.num_cpus=2); start-up (ray.init + a tiny warm-up job) is timed apart. Best of
  --repeat runs. Then, unless --no-stats, the recipe runs once more with engine.write_partitioned wrapped so that the
  Dataset it builds is materialised and `ds.stats()` is read before the real writer writes it.
  CPU seconds of every process of the Ray session are counted by kind (actors, tasks, driver, raylet+GCS, ...), peak
  RSS sampled every 0.25 s, and CPU used meanwhile by other users of the machine reported.
* direct (--direct, clean and tokenize): the batches, read beforehand, go to plain Ray actors (same count and CPUs
  as the config); only the stage calls are timed. What Ray costs without Ray Data.

ratio = (Ray docs/s / 2 cores) / (plain docs/s on one core); the project's target is >= 0.85. Outputs are checked:
rows per partition folder must be the same for plain and Ray.

Overrides: `--set key=value` goes to `ray_jobs.config.load_config` (plain and Ray); keys `bench.*` are this
benchmark's knobs for what is not a config field: bench.bytes_per_task_mb (ray_jobs.io.readers.BYTES_PER_TASK),
bench.preserve_order (DataContext.execution_options.preserve_order; engine.ray_session leaves Ray's default),
bench.shuffle_strategy (DataContext.shuffle_strategy; the config key ray.shuffle_strategy does the same now),
bench.tokenizers_parallelism (TOKENIZERS_PARALLELISM in the Ray workers), bench.io_cpus (num_cpus of the read and
write tasks instead of 1: engine.read_datasource and Dataset.write_parquet patched in the benchmark's driver only).
Never leaves Ray running: each Ray child shuts its session down, and leftovers it started are killed by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
OUT = REPO / "benchmarks" / "out"
CORPUS_ROOT = OUT / "corpus"
CORPUS = CORPUS_ROOT / "60mb-8files"  # set by main() from --mb / --files (children get the same flags)
GUTENBERG = DATA / "gutenberg_subset_rcdm_uga" / "gutenberg_dickens_twain_shakespeare.tar.gz"
IMDB = DATA / "imdb_aclimdb" / "aclImdb_train.tar.gz"
SPAM = DATA / "spamassassin_stdlib" / "spam_assassin_txt.tar.gz"
SHARES = {"gutenberg": 0.5, "imdb": 0.3, "spamassassin": 0.2}
CORPUS_VERSION = 2
# Seeds of the corpus sampling: never 0, which split.py uses for its hashes (a sample of the ids with the lowest
# seed-0 hashes went all to train).
SAMPLE_SEED, ORDER_SEED = 7919, 104729
VARIANTS = ("clean", "dedup", "split", "split_strat", "tokenize")
PAIRABLE = ("clean", "split", "tokenize")  # file-parallel without a global step: the --pair control applies
BASE_SET = ["ray.num_cpus=2", "ray.progress_bars=false"]
TARGET = 0.85
CORES = 2
# Ray-only settings tried by --sweep, each in a fresh Ray, on the stages (None = all) that are below target.
SWEEP: dict[str, tuple[list[str], tuple[str, ...] | None]] = {
    "batch 4096": (["ray.batch_size=4096"], None),
    "block 32 MB": (["ray.target_max_block_size_mb=32"], None),
    "preserve_order on": (["bench.preserve_order=true"], None),
    # 3 x 0.5 CPU + the read task's 1 CPU > 2 CPUs: the read is never scheduled and the run hangs (seen here).
    "3 actors x 0.33 CPU": (["clean.actors=3", "clean.actor_cpus=0.33", "tokenize.actors=3",
                             "tokenize.actor_cpus=0.33"], ("clean", "tokenize")),
    "tokenizers parallelism off": (["bench.tokenizers_parallelism=false"], ("tokenize",)),
    "read/write tasks 0.25 CPU": (["bench.io_cpus=0.25"], None),
    "dedup 8 buckets": (["dedup.num_buckets=8"], ("dedup",)),
    "dedup 2 buckets": (["dedup.num_buckets=2"], ("dedup",)),
    "dedup hash_shuffle": (["bench.shuffle_strategy=hash_shuffle"], ("dedup",)),
    "dedup sort_shuffle_pull_based": (["bench.shuffle_strategy=sort_shuffle_pull_based"], ("dedup",)),
    "dedup sort_shuffle_pull_based + 8 buckets": (["bench.shuffle_strategy=sort_shuffle_pull_based",
                                                   "dedup.num_buckets=8"], ("dedup",)),
}


# ------------------------------------------------------------------------------------------------ corpus


def _xxh(s: str, seed: int = 0) -> int:
    import xxhash

    return xxhash.xxh3_64_intdigest(s.encode("utf-8"), seed=seed)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _gutenberg_docs() -> list[dict]:
    """Books cut at blank lines into documents of 2-5 kB (the size drawn per document from a hash of its id)."""
    docs = []
    with tarfile.open(GUTENBERG, "r|gz") as tar:
        for m in tar:
            name = m.name.replace("\r", " ")
            if not m.isfile() or not name.endswith(".txt") or "/." in name:
                continue
            text = _decode(tar.extractfile(m).read()).replace("\r\n", "\n").replace("\r", "\n")
            paras: list[str] = []
            for p in re.split(r"\n[ \t]*\n", text):
                p = p.strip("\n")
                if not p.strip():
                    continue
                while len(p.encode()) > 5000:  # a paragraph longer than a document: cut at a line end
                    cut = p.rfind("\n", 0, 3500)
                    cut = cut if cut > 0 else 3500
                    paras.append(p[:cut])
                    p = p[cut:].lstrip("\n")
                paras.append(p)
            base = f"gutenberg/{name.removesuffix('.txt')}"
            buf: list[str] = []
            size, k = 0, 0
            target = 2000 + _xxh(f"{base}#0") % 3001
            for p in paras:
                buf.append(p)
                size += len(p.encode()) + 2
                if size >= target:
                    docs.append({"id": f"{base}#{k}", "text": "\n\n".join(buf), "source": "gutenberg", "label": "book"})
                    k += 1
                    buf, size = [], 0
                    target = 2000 + _xxh(f"{base}#{k}") % 3001
            if size >= 500:
                docs.append({"id": f"{base}#{k}", "text": "\n\n".join(buf), "source": "gutenberg", "label": "book"})
    return docs


def _member_docs(path: Path, source: str, keep, label_of) -> list[dict]:
    docs = []
    with tarfile.open(path, "r|gz") as tar:
        for m in tar:
            if m.isfile() and keep(m.name):
                docs.append({"id": f"{source}/{m.name}", "text": _decode(tar.extractfile(m).read()), "source": source,
                             "label": label_of(m.name)})
    return docs


def build_corpus(mb: float, n_files: int) -> Path:
    """~mb MB of text (UTF-8 bytes) in n_files Parquet files; cached by (mb, n_files, version)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    set_corpus(mb, n_files)
    want = {"version": CORPUS_VERSION, "mb": mb, "files": n_files}
    manifest = CORPUS / "_manifest.json"  # "_": discover() skips it
    if manifest.is_file() and {k: v for k, v in json.loads(manifest.read_text()).items() if k in want} == want:
        return CORPUS
    t0 = time.perf_counter()
    pools = {
        "gutenberg": _gutenberg_docs(),
        "imdb": _member_docs(IMDB, "imdb", lambda n: re.search(r"/train/(pos|neg)/[^/]+\.txt$", n) is not None,
                             lambda n: "review_" + n.split("/")[-2]),
        "spamassassin": _member_docs(SPAM, "spamassassin", lambda n: n.endswith(".txt"),
                                     lambda n: "spam" if "/spam" in n else "ham"),
    }
    budget = mb * 1e6
    chosen: list[dict] = []
    left = dict(SHARES)
    # Smallest pool first; each source takes its share of what is left, in an order fixed by a hash of the id,
    # so a source that runs short leaves the rest to the others.
    for src in sorted(pools, key=lambda s: sum(len(d["text"].encode()) for d in pools[s])):
        share = budget * left[src] / sum(left.values())
        del left[src]
        taken = 0
        for d in sorted(pools[src], key=lambda d: _xxh(d["id"], seed=SAMPLE_SEED)):
            if taken >= share:
                break
            chosen.append(d)
            taken += len(d["text"].encode())
        budget -= taken
    chosen.sort(key=lambda d: _xxh(d["id"], seed=ORDER_SEED))
    shutil.rmtree(CORPUS, ignore_errors=True)
    CORPUS.mkdir(parents=True)
    total = sum(len(d["text"].encode()) for d in chosen)
    per_file = total / n_files
    start, acc, part = 0, 0, 0
    for i, d in enumerate(chosen):
        acc += len(d["text"].encode())
        if acc >= per_file * (part + 1) or i == len(chosen) - 1:
            rows = chosen[start:i + 1]
            pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
                [("id", pa.string()), ("text", pa.string()), ("source", pa.string()), ("label", pa.string())])),
                CORPUS / f"part-{part:03d}.parquet", compression="zstd")
            start, part = i + 1, part + 1
    counts: dict[str, int] = {}
    for d in chosen:
        counts[d["label"]] = counts.get(d["label"], 0) + 1
    manifest.write_text(json.dumps({**want, "docs": len(chosen), "text_bytes": total, "labels": counts,
                                    "build_s": round(time.perf_counter() - t0, 1)}, indent=1) + "\n")
    return CORPUS


def set_corpus(mb: float, n_files: int) -> None:
    global CORPUS
    CORPUS = CORPUS_ROOT / f"{mb:g}mb-{n_files}files"


def corpus_info() -> dict:
    return json.loads((CORPUS / "_manifest.json").read_text())


# ------------------------------------------------------------------------------------------------ helpers


def split_overrides(items: list[str]) -> tuple[list[str], dict[str, str]]:
    cfg, bench = [], {}
    for it in items:
        k, _, v = it.partition("=")
        if k.startswith("bench."):
            bench[k.removeprefix("bench.")] = v
        else:
            cfg.append(it)
    return cfg, bench


def variant_config(variant: str, overrides: list[str]):
    from ray_jobs.config import load_config

    extra = ["split.stratify_by=label"] if variant == "split_strat" else []
    return load_config(None, BASE_SET + overrides + extra)


def input_config():
    from ray_jobs.config import InputConfig

    return InputConfig(paths=(str(CORPUS),), format="parquet")


def stage_name(variant: str) -> str:
    return "split" if variant == "split_strat" else variant


def host_busy_s() -> float:
    """CPU seconds all processes on this host have used since boot (every core; /proc/stat, minus idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


class PartWriter:
    """zstd Parquet partitioned by one column, `col=value/part-0.parquet`, the column dropped like Ray's writer."""

    def __init__(self, root: Path, col: str) -> None:
        self.root, self.col, self.writers = root, col, {}

    def write(self, table) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for v in pc.unique(table[self.col]).to_pylist():
            part = table.filter(pc.equal(table[self.col], v)).drop_columns([self.col])
            w = self.writers.get(v)
            if w is None:
                d = self.root / f"{self.col}={v}"
                d.mkdir(parents=True, exist_ok=True)
                w = self.writers[v] = pq.ParquetWriter(d / "part-0.parquet", part.schema, compression="zstd")
            if part.schema != w.schema:
                part = part.cast(w.schema)
            w.write_table(part)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


# ------------------------------------------------------------------------------------------------ plain loop


def plain_main(variant: str, overrides: list[str], part: tuple[int, int] = (0, 1)) -> dict:
    """One stage variant in this process (pinned to core 0 by the caller's environment): read -> stage -> write."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from ray_jobs import schema
    from ray_jobs.dedup.exact import BUCKET, ExactHashStage, keep_lowest_id
    from ray_jobs.io.formats import parse_file
    from ray_jobs.io.readers import discover
    from ray_jobs.jobs.pipeline import _ensure_split
    from ray_jobs.split import (AssignSplitStage, SplitKeyStage, SplitPlan, bin_counts, boundary_bins,
                                boundary_filter, plan_from_boundaries, sum_bin_counts)
    from ray_jobs.stages.clean import CleanStage
    from ray_jobs.tokenize.stage import TokenizeStage

    cfg_over, _ = split_overrides(overrides)
    cfg = variant_config(variant, cfg_over)
    in_cfg = input_config()
    bs = cfg.ray.batch_size
    out = OUT / "plain" / (variant if part[1] == 1 else f"{variant}-part{part[0]}of{part[1]}")
    shutil.rmtree(out, ignore_errors=True)
    units = discover(in_cfg)[part[0]::part[1]]  # --pair: every other file
    rows = 0

    def batches():
        nonlocal rows
        for unit in units:
            for t in parse_file(unit, in_cfg):
                rows += t.num_rows
                for off in range(0, t.num_rows, bs):
                    yield t.slice(off, bs)

    busy0 = host_busy_s()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    setup_s = 0.0
    if variant in ("clean", "tokenize"):
        # the recipe adds `split` before the tokenize actors
        st, col, prep = ((CleanStage(cfg.clean), schema.STATUS, lambda b: b) if variant == "clean"
                         else (TokenizeStage(cfg.tokenize), schema.SPLIT, _ensure_split))
        st.setup()
        setup_s = time.perf_counter() - t0
        w = PartWriter(out, col)
        for b in batches():
            w.write(st(prep(b)))
    elif variant == "dedup":
        hs = ExactHashStage(cfg.dedup)
        w = PartWriter(out, schema.STATUS)
        t = pa.concat_tables([hs(b) for b in batches()])
        t = t.take(pc.sort_indices(t, sort_keys=[(BUCKET, "ascending")]))
        buckets = t[BUCKET].to_numpy()
        edges = np.flatnonzero(np.diff(buckets)) + 1
        for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(buckets)]):
            w.write(keep_lowest_id(t.slice(int(lo), int(hi - lo))))
    elif variant.startswith("split"):
        ks = SplitKeyStage(cfg.split)
        w = PartWriter(out, schema.SPLIT)
        if not cfg.split.stratify_by:
            assign = AssignSplitStage(cfg.split, SplitPlan({}))
            for b in batches():
                w.write(assign(ks(b)))
        else:
            keyed = [ks(b) for b in batches()]
            counts = sum_bin_counts(map(bin_counts, keyed))  # the same accumulation as pipeline._split_plan
            bounds = boundary_bins(counts, cfg.split)
            keep = boundary_filter(bounds)
            plan = plan_from_boundaries(bounds, cfg.split, pa.concat_tables([keep(t) for t in keyed]), counts)
            assign = AssignSplitStage(cfg.split, plan)
            for t in keyed:
                w.write(assign(t))
    else:
        raise SystemExit(f"unknown variant {variant}")
    w.close()
    wall = time.perf_counter() - t0
    from ray_jobs.rundir import partition_counts
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    return {"variant": variant, "rows": rows, "wall_s": wall, "setup_s": setup_s, "cpu_s": cpu_s,
            "foreign_cpu_s": host_busy_s() - busy0 - cpu_s, "peak_rss_mb": cpu.ru_maxrss / 1024,
            "counts": partition_counts(out),
            "affinity": sorted(os.sched_getaffinity(0))}


# ------------------------------------------------------------------------------------------------ Ray


class Monitor(threading.Thread):
    """Samples this process's RSS and its descendants' (Ray's processes are children of the driver)."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.me = psutil.Process()
        self.interval = interval
        self.lock = threading.Lock()
        self.pids: set[int] = set()
        self._halt = threading.Event()
        self.reset()

    def reset(self) -> None:
        """Start a window: peaks from zero, CPU seconds of this process and its descendants counted from now."""
        with self.lock:
            self.peak = {"driver_rss_mb": 0.0, "workers_rss_sum_mb": 0.0, "worker_rss_max_mb": 0.0,
                         "ray_procs_rss_sum_mb": 0.0, "workers_max": 0}
            self.t0, self.busy0 = time.time(), host_busy_s()
            self.cpu: dict[int, list[float]] = {}  # pid -> [cpu at first sight in the window, latest]
            self.kind: dict[int, str] = {}  # pid -> what it is (see _kind)
        self.sample()

    def snapshot(self) -> dict:
        """Peaks, our CPU seconds in the window (Ray's processes + driver) and everybody else's on this host."""
        self.sample()
        with self.lock:
            ours = sum(last - first for first, last in self.cpu.values())
            by_kind: dict[str, float] = {}
            for pid, (first, last) in self.cpu.items():
                k = self.kind.get(pid, "other")
                by_kind[k] = by_kind.get(k, 0.0) + last - first
            return {**self.peak, "cpu_s": ours, "foreign_cpu_s": host_busy_s() - self.busy0 - ours,
                    "cpu_by_kind_s": {k: round(v, 2) for k, v in sorted(by_kind.items())}}

    def _kind(self, pid: int, cmd: list[str]) -> str:
        """actors (the stage's actor pool), tasks (task workers), system actors, raylet+gcs, daemons, driver."""
        head = cmd[0] if cmd else ""
        old = self.kind.get(pid)
        if head.startswith("ray::MapWorker") or old == "actors":
            return "actors"
        if head.startswith(SYSTEM_ACTORS):
            return "ray system actors"
        if head.startswith("ray::"):
            return old if old in ("actors",) else "tasks"
        if any("raylet" in c or "gcs_server" in c for c in cmd[:1]):
            return "raylet+gcs"
        return "ray daemons (dashboard, log monitor, agents)"

    def _cpu(self, p, t0: float) -> None:
        c = p.cpu_times()
        now = c.user + c.system
        entry = self.cpu.get(p.pid)
        if entry is None:  # born inside the window: all its CPU counts; else count from now
            entry = self.cpu[p.pid] = [0.0 if p.create_time() >= t0 else now, now]
        entry[1] = now

    def sample(self) -> None:
        ps = self.psutil
        try:
            kids = self.me.children(recursive=True)
        except ps.Error:
            return
        workers, others = [], []
        with self.lock:
            for p in [self.me, *kids]:
                try:
                    self._cpu(p, self.t0)
                    if p is self.me:
                        self.kind[p.pid] = "driver"
                        continue
                    cmd = p.cmdline()
                    self.kind[p.pid] = self._kind(p.pid, cmd)
                    rss = p.memory_info().rss / 2**20
                except ps.Error:
                    continue
                self.pids.add(p.pid)
                is_worker = bool(cmd) and cmd[0].startswith("ray::") and not cmd[0].startswith(SYSTEM_ACTORS)
                (workers if is_worker else others).append(rss)
        drv = self.me.memory_info().rss / 2**20
        with self.lock:
            pk = self.peak
            pk["driver_rss_mb"] = max(pk["driver_rss_mb"], drv)
            pk["workers_rss_sum_mb"] = max(pk["workers_rss_sum_mb"], sum(workers))
            pk["worker_rss_max_mb"] = max(pk["worker_rss_max_mb"], max(workers, default=0.0))
            pk["ray_procs_rss_sum_mb"] = max(pk["ray_procs_rss_sum_mb"], sum(workers) + sum(others))
            pk["workers_max"] = max(pk["workers_max"], len(workers))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()


# Ray's own long-lived processes (not data workers): counted in ray_procs_rss_sum_mb only.
SYSTEM_ACTORS = ("ray::_", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::ActorLocationTracker")
_OP = re.compile(r"^Operator (\d+) (.+?): (\d+) tasks executed, (\d+) blocks produced in ([\d.]+)(ms|s|us)")
_WALL = re.compile(r"^\* Remote wall time: .*?([\d.]+)(ms|s|us) total")
_CPU = re.compile(r"^\* Remote cpu time: .*?([\d.]+)(ms|s|us) total")
_UDF = re.compile(r"^\* Block transform time: .*?([\d.]+)(ms|s|us) total")
_UNIT = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_stats(text: str) -> list[dict]:
    """Per operator: name, tasks, blocks, wall (operator), remote wall / cpu / UDF totals, in seconds."""
    ops: list[dict] = []
    for line in text.splitlines():
        line = line.strip()
        m = _OP.match(line)
        if m:
            ops.append({"op": m.group(2), "tasks": int(m.group(3)), "blocks": int(m.group(4)),
                        "op_wall_s": float(m.group(5)) * _UNIT[m.group(6)]})
            continue
        if not ops:
            continue
        for key, rx in (("remote_wall_s", _WALL), ("remote_cpu_s", _CPU), ("transform_s", _UDF)):
            m = rx.match(line)
            if m and key not in ops[-1]:
                ops[-1][key] = float(m.group(1)) * _UNIT[m.group(2)]
    return ops


def stats_run(variant: str, cfg, in_cfg, root: Path) -> dict:
    """The recipe once more, with engine.write_partitioned wrapped: the Dataset it is handed is materialised first
    so that ds.stats() is reachable, then written by the real function. The Dataset is exactly the one the recipe
    builds from engine.read_datasource / engine.apply / engine.map_groups, whatever the recipe does today."""
    from ray_jobs import engine
    from ray_jobs.jobs import pipeline
    from ray_jobs.rundir import RunDir

    got: dict = {}
    write = engine.write_partitioned

    def materialise_then_write(ds, out_dir, col, extras):
        t = time.perf_counter()
        ds = ds.materialize()
        got["materialize_s"] = time.perf_counter() - t
        got["text"] = ds.stats()
        got["blocks"] = ds.num_blocks()
        t = time.perf_counter()
        write(ds, out_dir, col, extras)
        got["write_s"] = time.perf_counter() - t

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    engine.write_partitioned = materialise_then_write
    try:
        pipeline.STAGE_FUNCS[stage_name(variant)](cfg, RunDir(root), in_cfg, True)
    finally:
        engine.write_partitioned = write
    sdir = OUT / "stats"
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / f"{variant}.txt").write_text(got["text"])
    return {"materialize_s": got["materialize_s"], "write_s": got["write_s"], "ops": parse_stats(got["text"]),
            "blocks": got["blocks"], "stats_file": str((sdir / f"{variant}.txt").relative_to(REPO))}


def ray_main(variants: list[str], overrides: list[str], with_stats: bool, repeat: int = 1) -> dict:
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    cfg_over, bench = split_overrides(overrides)
    import ray
    import ray.data

    from ray_jobs import engine
    from ray_jobs.io import readers
    from ray_jobs.jobs import pipeline
    from ray_jobs.rundir import RunDir, partition_counts

    if bench.get("tokenizers_parallelism"):  # set before ray.init: the raylet and its workers inherit it
        os.environ["TOKENIZERS_PARALLELISM"] = bench["tokenizers_parallelism"]
    if "io_cpus" in bench:  # read and write tasks ask for this many CPUs instead of Ray's 1 (driver-side patch)
        io_cpus = float(bench["io_cpus"])
        engine.read_datasource = lambda source: ray.data.read_datasource(source, num_cpus=io_cpus)
        write_parquet = ray.data.Dataset.write_parquet

        def write_parquet_io_cpus(self, path, **kw):
            kw.setdefault("ray_remote_args", {"num_cpus": io_cpus})
            return write_parquet(self, path, **kw)

        ray.data.Dataset.write_parquet = write_parquet_io_cpus
    if "bytes_per_task_mb" in bench:
        readers.BYTES_PER_TASK = int(float(bench["bytes_per_task_mb"]) * 2**20)  # read on the driver at plan time
    mon = Monitor()
    mon.start()
    in_cfg = input_config()
    base_cfg = variant_config("clean", cfg_over)
    res: dict = {"overrides": overrides, "stages": {}}
    t0 = time.perf_counter()
    with engine.ray_session(base_cfg.ray):
        ctx = ray.data.DataContext.get_current()
        if "preserve_order" in bench:
            ctx.execution_options.preserve_order = bench["preserve_order"] == "true"
        if "shuffle_strategy" in bench:
            ctx.shuffle_strategy = bench["shuffle_strategy"]
        res["shuffle_strategy"] = str(ctx.shuffle_strategy)
        ray.data.range(64, override_num_blocks=2).map_batches(lambda b: b).materialize()  # workers import Ray Data
        res["startup_s"] = time.perf_counter() - t0
        res["ray_cpus"] = ray.cluster_resources().get("CPU")
        res["skipped"] = {}
        for v in variants:
            cfg = variant_config(v, cfg_over)
            pool = getattr(cfg, stage_name(v), None)
            need = getattr(pool, "actors", 0) * getattr(pool, "actor_cpus", 0) + 1.0  # + one read task
            if v in ("clean", "tokenize") and need > (res["ray_cpus"] or 0) + 1e-9:
                res["skipped"][v] = (f"{pool.actors} actors x {pool.actor_cpus} CPU + 1 CPU for the read task > "
                                     f"{res['ray_cpus']} CPUs: the read task would never be scheduled (hang)")
                continue
            run_root = OUT / "ray_runs" / v
            reps = []
            for _ in range(repeat):
                shutil.rmtree(run_root, ignore_errors=True)
                run = RunDir(run_root)
                run.root.mkdir(parents=True)
                mon.reset()
                t = time.perf_counter()
                pipeline.STAGE_FUNCS[stage_name(v)](cfg, run, in_cfg, True)
                wall = time.perf_counter() - t
                counts = partition_counts(run.stage_dir(stage_name(v)))
                reps.append({"wall_s": wall, **mon.snapshot(), "counts": counts})
                print(f"  ray {v}: {wall:.1f} s", file=sys.stderr, flush=True)
            st = {**min(reps, key=lambda r: r["wall_s"]), "walls_s": [r["wall_s"] for r in reps], "reps": reps}
            if with_stats:
                mon.reset()
                t = time.perf_counter()
                st["stats_run"] = stats_run(v, cfg, in_cfg, OUT / "ray_runs" / f"{v}-stats")
                st["stats_run"]["wall_s"] = time.perf_counter() - t
                st["stats_run"].update(mon.snapshot())
            res["stages"][v] = st
        mon.sample()
    res["session_s"] = time.perf_counter() - t0
    res["driver_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    time.sleep(0.5)
    mon.stop()
    res["ray_pids"] = sorted(mon.pids)
    return res


def direct_main(variant: str, overrides: list[str]) -> dict:
    """Control without Ray Data: the batches (read beforehand, untimed) go to `actors` plain Ray actors of
    `actor_cpus` CPUs each, round robin; only the stage calls are timed. No read, no write, no streaming executor."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    cfg_over, bench = split_overrides(overrides)
    if bench.get("tokenizers_parallelism"):
        os.environ["TOKENIZERS_PARALLELISM"] = bench["tokenizers_parallelism"]
    import ray

    from ray_jobs.io.formats import parse_file
    from ray_jobs.io.readers import discover
    from ray_jobs.jobs.pipeline import _ensure_split
    from ray_jobs.stages.clean import CleanStage
    from ray_jobs.tokenize.stage import TokenizeStage

    cfg = variant_config(variant, cfg_over)
    in_cfg = input_config()
    bs = cfg.ray.batch_size
    batches = [_ensure_split(t.slice(o, bs)) for u in discover(in_cfg) for t in parse_file(u, in_cfg)
               for o in range(0, t.num_rows, bs)]
    pool = cfg.clean if variant == "clean" else cfg.tokenize
    stage = CleanStage(cfg.clean) if variant == "clean" else TokenizeStage(cfg.tokenize)

    @ray.remote
    class Direct:
        def __init__(self, st) -> None:
            st.setup()
            self.st, self.cpu = st, 0.0

        def run(self, table) -> int:
            c = time.thread_time()
            n = self.st(table).num_rows
            self.cpu += time.thread_time() - c
            return n

        def usage(self) -> tuple[float, float]:
            r = resource.getrusage(resource.RUSAGE_SELF)
            return self.cpu, r.ru_utime + r.ru_stime

    ray.init(num_cpus=cfg.ray.num_cpus or None, include_dashboard=False, log_to_driver=False)
    try:
        refs = [ray.put(b) for b in batches]
        actors = [Direct.options(num_cpus=pool.actor_cpus).remote(stage) for _ in range(pool.actors)]
        ray.get([a.usage.remote() for a in actors])  # started and set up before the clock starts
        t = time.perf_counter()
        rows = sum(ray.get([actors[i % len(actors)].run.remote(r) for i, r in enumerate(refs)]))
        wall = time.perf_counter() - t
        usage = ray.get([a.usage.remote() for a in actors])
    finally:
        ray.shutdown()
    return {"variant": variant, "rows": rows, "wall_s": wall, "stage_thread_cpu_s": sum(u[0] for u in usage),
            "actor_process_cpu_s": sum(u[1] for u in usage), "actors": pool.actors}


# ------------------------------------------------------------------------------------------------ orchestration


class ChildFailed(RuntimeError):
    pass


def session_pids(sid: int) -> list[int]:
    """Every process of session `sid` (a child started with start_new_session=True and all it started)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return pids


def _spawn(args: list[str], core: int | None) -> subprocess.Popen:
    """This script in a child in its own session; pinned to `core` with one thread per library when given."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ENABLE_UV_RUN_RUNTIME_ENV="0")
    if core is not None:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, __file__, *args], env=env, stdout=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None)


def _collect(proc: subprocess.Popen, args: list[str], timeout: float) -> dict:
    """The child's last stdout line as JSON; on a timeout its whole session (Ray included) is killed by pid."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        proc.wait()
        raise ChildFailed(f"ran past {timeout:.0f} s (killed): {' '.join(args)}")
    leftovers = session_pids(proc.pid)  # anything the child started (Ray) that outlived it: ours, killed by pid
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if leftovers:
        print(f"  killed {len(leftovers)} leftover process(es) of {' '.join(args[:2])}", file=sys.stderr, flush=True)
    if proc.returncode != 0:
        raise ChildFailed(f"exit code {proc.returncode}: {' '.join(args)}")
    return json.loads(out.strip().splitlines()[-1])


def _child(args: list[str], pin: bool, timeout: float) -> dict:
    return _collect(_spawn(args, 0 if pin else None), args, timeout)


def kill_leftovers(pids: list[int]) -> list[int]:
    """Ray processes this benchmark started that outlived their driver: killed by pid."""
    import psutil

    killed = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if any(s in " ".join(p.cmdline()) for s in ("ray", "raylet", "gcs_server")):
                p.kill()
                killed.append(pid)
        except psutil.Error:
            pass
    return killed


def fmt(x: float, nd: int = 0) -> str:
    return f"{x:,.{nd}f}"


def table_rows(plain: dict, ray_res: dict, info: dict, pair: dict | None = None) -> list[dict]:
    rows = []
    mb = info["text_bytes"] / 1e6
    n = info["docs"]
    for v, r in ray_res["stages"].items():
        p = plain.get(v)
        ray_pc = n / r["wall_s"] / CORES
        q = (pair or {}).get(v)
        row = {"stage": v, "ray_s": r["wall_s"], "ray_docs_pc": ray_pc, "ray_mb_pc": mb / r["wall_s"] / CORES,
               "ray_driver_mb": r["driver_rss_mb"], "ray_workers_mb": r["workers_rss_sum_mb"],
               "ray_worker_max_mb": r["worker_rss_max_mb"], "ray_workers_n": r["workers_max"],
               "ray_cpu_s": r["cpu_s"], "ray_foreign_s": r["foreign_cpu_s"],
               "ray_stats_s": r.get("stats_run", {}).get("wall_s")}
        if p:
            row.update(plain_s=p["wall_s"], plain_docs=n / p["wall_s"], plain_mb=mb / p["wall_s"],
                       plain_rss_mb=p["peak_rss_mb"], ratio=ray_pc / (n / p["wall_s"]),
                       plain_cpu_s=p["cpu_s"], plain_foreign_s=p["foreign_cpu_s"],
                       cpu_ratio=p["cpu_s"] / r["cpu_s"])
        if p:
            row["same_output"] = p.get("counts") == r.get("counts")
        if p and q:
            row.update(pair_s=q["wall_s"], pair_ratio=p["wall_s"] / q["wall_s"] / CORES)
        rows.append(row)
    return rows


def pipeline_row(rows: list[dict], info: dict) -> dict | None:
    """clean + dedup + split (plain) + tokenize, as `run` chains them: summed stage walls."""
    by = {r["stage"]: r for r in rows}
    need = ("clean", "dedup", "split", "tokenize")
    if not all(k in by and "plain_s" in by[k] for k in need):
        return None
    n, mb = info["docs"], info["text_bytes"] / 1e6
    ps = sum(by[k]["plain_s"] for k in need)
    rs = sum(by[k]["ray_s"] for k in need)
    return {"stage": "pipeline (clean+dedup+split+tokenize)", "plain_s": ps, "plain_docs": n / ps, "plain_mb": mb / ps,
            "ray_s": rs, "ray_docs_pc": n / rs / CORES, "ray_mb_pc": mb / rs / CORES, "ratio": ps / rs / CORES}


def markdown(rows: list[dict]) -> str:
    out = ["| stage | plain s | plain docs/s (1 core) | plain MB/s | Ray s | Ray docs/s/core | Ray MB/s/core | "
           "ratio | 2 plain procs at once: s, ratio | plain peak RSS MB | Ray driver peak RSS MB | "
           "Ray workers peak RSS MB (sum / max one, n) | rows per partition = plain |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        has = "plain_s" in r
        if "ray_driver_mb" not in r:  # the pipeline sum
            out.append(f"| {r['stage']} | {fmt(r['plain_s'], 1)} | {fmt(r['plain_docs'])} | {fmt(r['plain_mb'], 2)} | "
                       f"{fmt(r['ray_s'], 1)} | {fmt(r['ray_docs_pc'])} | {fmt(r['ray_mb_pc'], 2)} | "
                       f"**{fmt(r['ratio'], 2)}** | | | | | |")
            continue
        out.append(
            f"| {r['stage']} | {fmt(r['plain_s'], 1) if has else '-'} | {fmt(r['plain_docs']) if has else '-'} | "
            f"{fmt(r['plain_mb'], 2) if has else '-'} | {fmt(r['ray_s'], 1)} | {fmt(r['ray_docs_pc'])} | "
            f"{fmt(r['ray_mb_pc'], 2)} | **{fmt(r['ratio'], 2) if has else '-'}** | "
            f"{(fmt(r['pair_s'], 1) + ', ' + fmt(r['pair_ratio'], 2)) if 'pair_s' in r else '-'} | "
            f"{fmt(r['plain_rss_mb']) if has else '-'} | {fmt(r['ray_driver_mb'])} | "
            f"{fmt(r['ray_workers_mb'])} / {fmt(r['ray_worker_max_mb'])}, {r['ray_workers_n']} | "
            f"{({True: 'yes', False: 'NO'}).get(r.get('same_output'), '-')} |")
    return "\n".join(out)


def cpu_markdown(rows: list[dict]) -> str:
    out = ["| stage | plain CPU s (wall s) | Ray CPU s, all processes (wall s) | Ray cores busy (of 2) | "
           "CPU efficiency plain/Ray | other users' CPU s during plain / Ray | Ray 2nd run wall s (stats run) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        has = "plain_s" in r
        plain_cpu = f"{r['plain_cpu_s']:.1f} ({r['plain_s']:.1f})" if has else "-"
        eff = f"{r['cpu_ratio']:.2f}" if has else "-"
        pf = f"{r['plain_foreign_s']:.1f}" if has else "-"
        second = f"{r['ray_stats_s']:.1f}" if r.get("ray_stats_s") else "-"
        out.append(f"| {r['stage']} | {plain_cpu} | {r['ray_cpu_s']:.1f} ({r['ray_s']:.1f}) | "
                   f"{r['ray_cpu_s'] / r['ray_s']:.2f} | {eff} | {pf} / {r['ray_foreign_s']:.1f} | {second} |")
    return "\n".join(out)


def kind_markdown(ray_res: dict) -> str:
    kinds = sorted({k for r in ray_res["stages"].values() for k in r.get("cpu_by_kind_s", {})})
    out = ["| stage | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for v, r in ray_res["stages"].items():
        c = r.get("cpu_by_kind_s", {})
        out.append(f"| {v} | " + " | ".join(f"{c.get(k, 0.0):.1f}" for k in kinds) + " |")
    return "\n".join(out)


def stats_markdown(ray_res: dict) -> str:
    out = ["| stage | operator | tasks | blocks | op wall s | remote wall s (sum) | remote CPU s (sum) | "
           "block transform s (sum) |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for v, r in ray_res["stages"].items():
        s = r.get("stats_run")
        if not s:
            continue
        for op in s["ops"]:
            out.append(f"| {v} | {op['op']} | {op['tasks']} | {op['blocks']} | {op['op_wall_s']:.2f} | "
                       f"{op.get('remote_wall_s', float('nan')):.2f} | {op.get('remote_cpu_s', float('nan')):.2f} | "
                       f"{op.get('transform_s', float('nan')):.2f} |")
        out.append(f"| {v} | *materialize / write (driver wall)* | | {s['blocks']} | {s['materialize_s']:.2f} / "
                   f"{s['write_s']:.2f} | | | |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=60.0, help="MB of text in the corpus (default 60)")
    ap.add_argument("--files", type=int, default=8, help="Parquet files in the corpus (default 8)")
    ap.add_argument("--stages", default=",".join(VARIANTS), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="config override for the Ray runs (and the plain loop's batch size); bench.* keys too")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain loop (reuse none; ratio column empty)")
    ap.add_argument("--no-stats", action="store_true", help="skip the ds.stats() runs")
    ap.add_argument("--sweep", action="store_true", help="re-run the stages below target with the SWEEP settings")
    ap.add_argument("--json", default=str(OUT / "stage_bench.json"), help="where to write all figures")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of each plain loop and each Ray recipe; the fastest counts (default 2)")
    ap.add_argument("--sweep-repeat", type=int, default=1, help="runs of each sweep setting (default 1)")
    ap.add_argument("--sweep-timeout", type=float, default=300, help="seconds before a sweep run is killed")
    ap.add_argument("--_plain", help=argparse.SUPPRESS)
    ap.add_argument("--no-pair", action="store_true",
                    help="skip the control of two plain loops at once (one per core, half the files each)")
    ap.add_argument("--direct", action="store_true",
                    help="control for clean/tokenize: the same stage in plain Ray actors without Ray Data "
                         "(batches pre-read, only stage calls timed)")
    ap.add_argument("--_part", default="0/1", help=argparse.SUPPRESS)
    ap.add_argument("--_direct", help=argparse.SUPPRESS)
    ap.add_argument("--_ray", help=argparse.SUPPRESS)
    ap.add_argument("--_stats", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    set_corpus(args.mb, args.files)
    if args._plain:
        i, n = (int(x) for x in args._part.split("/"))
        print(json.dumps(plain_main(args._plain, args.overrides, (i, n))))
        return
    if args._direct:
        print(json.dumps(direct_main(args._direct, args.overrides)))
        return
    if args._ray:
        print(json.dumps(ray_main(args._ray.split(","), args.overrides, args._stats, args.repeat)))
        return

    variants = [v for v in args.stages.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown stage(s) {bad}; choose from {', '.join(VARIANTS)}")
    t_all = time.perf_counter()
    print(f"corpus: building/reusing {args.mb} MB in {args.files} files ...", file=sys.stderr, flush=True)
    build_corpus(args.mb, args.files)
    info = corpus_info()
    print(f"corpus: {info['docs']:,} docs, {info['text_bytes'] / 1e6:.1f} MB text, labels {info['labels']}",
          file=sys.stderr, flush=True)
    sets = [f"--mb={args.mb}", f"--files={args.files}", *[f"--set={s}" for s in args.overrides]]
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "ray_jobs"], capture_output=True,
                           text=True).stdout.strip()
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "corpus": info,
                    "git": git.stdout.strip() + (" + uncommitted changes in ray_jobs/" if dirty else ""),
                    "overrides": args.overrides, "command": " ".join(sys.argv), "errors": []}
    out_json = Path(args.json)
    out_json.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every step: a killed run keeps what it measured
        out_json.write_text(json.dumps(result, indent=1) + "\n")

    plain: dict = {}
    pair: dict = {}
    if not args.no_plain:
        for v in variants:
            reps = [_child(["--_plain", v, *sets], pin=True, timeout=600) for _ in range(args.repeat)]
            plain[v] = {**min(reps, key=lambda r: r["wall_s"]), "walls_s": [r["wall_s"] for r in reps]}
            print(f"  plain {v}: {[round(w, 2) for w in plain[v]['walls_s']]} s, rss {plain[v]['peak_rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
            if not args.no_pair and v in PAIRABLE:
                a0 = ["--_plain", v, "--_part=0/2", *sets]
                a1 = ["--_plain", v, "--_part=1/2", *sets]
                p0, p1 = _spawn(a0, 0), _spawn(a1, 1)
                r0, r1 = _collect(p0, a0, 600), _collect(p1, a1, 600)
                pair[v] = {"wall_s": max(r0["wall_s"], r1["wall_s"]), "parts": [r0, r1]}
                print(f"  plain pair {v}: {r0['wall_s']:.2f} / {r1['wall_s']:.2f} s", file=sys.stderr, flush=True)
            result.update(plain=plain, pair=pair)
            save()
    ray_res = _child(["--_ray", ",".join(variants), f"--repeat={args.repeat}", *sets,
                      *([] if args.no_stats else ["--_stats"])], pin=False, timeout=1500)
    killed = kill_leftovers(ray_res["ray_pids"])
    rows = table_rows(plain, ray_res, info, pair)
    result.update(ray=ray_res, rows=rows, leftovers_killed=killed)
    save()

    direct: dict = {}
    if args.direct:
        for v in [v for v in variants if v in ("clean", "tokenize")]:
            direct[v] = _child(["--_direct", v, *sets], pin=False, timeout=600)
            print(f"  direct actors {v}: {direct[v]['wall_s']:.1f} s", file=sys.stderr, flush=True)
        result["direct"] = direct
        save()

    sweep_rows: dict[str, list[dict]] = {}
    if args.sweep:
        below = [r["stage"] for r in rows if r.get("ratio", 0) < TARGET]
        result["sweep"] = {}
        for name, (sset, only) in SWEEP.items():
            todo = [v for v in below if only is None or v in only]
            if not todo:
                continue
            sargs = ["--_ray", ",".join(todo), f"--repeat={args.sweep_repeat}", f"--mb={args.mb}",
                     f"--files={args.files}", *[f"--set={s}" for s in args.overrides + sset]]
            try:
                r = _child(sargs, pin=False, timeout=args.sweep_timeout)
            except ChildFailed as e:
                result["errors"].append(f"sweep {name}: {e}")
                print(f"  sweep {name}: FAILED {e}", file=sys.stderr, flush=True)
                continue
            kill_leftovers(r["ray_pids"])
            sweep_rows[name] = table_rows(plain, r, info, pair)
            result["sweep"][name] = {"settings": sset, "rows": sweep_rows[name], "skipped": r.get("skipped", {})}
            save()
            print(f"  sweep {name}: " + ", ".join(f"{x['stage']} {x.get('ratio', 0):.2f}" for x in sweep_rows[name]),
                  file=sys.stderr, flush=True)

    result["total_s"] = time.perf_counter() - t_all
    save()
    print(f"\nCorpus: {info['docs']:,} docs, {info['text_bytes'] / 1e6:.1f} MB of text in {info['files']} Parquet "
          f"files; Ray start-up {ray_res['startup_s']:.1f} s (excluded); settings: "
          f"{' '.join(BASE_SET + args.overrides)}; ray_jobs at {result['git']}\n")
    prow = pipeline_row(rows, info)
    result["pipeline"] = prow
    print(markdown(rows + ([prow] if prow else [])))
    print("\nCPU accounting (CPU seconds from /proc; 'other users' = host busy time minus ours):\n")
    print(cpu_markdown(rows))
    print("\nRay CPU seconds by process kind (fastest run of each stage):\n")
    print(kind_markdown(ray_res))
    if not args.no_stats:
        print("\nWhere Ray's time goes (ds.stats() of the same Dataset built from the engine functions):\n")
        print(stats_markdown(ray_res))
    if direct:
        print("\nControl: the stage calls alone in plain Ray actors (no Ray Data, no read/write; batches pre-read):\n")
        print("| stage | actors | wall s | docs/s/core | ratio to plain loop (which includes read + write) | "
              "stage CPU s in actors (plain loop, whole) | actor process CPU s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for v, d in direct.items():
            p = plain.get(v)
            ratio = f"{p['wall_s'] / d['wall_s'] / CORES:.2f}" if p else "-"
            pc = f" ({p['cpu_s']:.1f})" if p else ""
            print(f"| {v} | {d['actors']} | {d['wall_s']:.1f} | {info['docs'] / d['wall_s'] / CORES:,.0f} | {ratio} | "
                  f"{d['stage_thread_cpu_s']:.1f}{pc} | {d['actor_process_cpu_s']:.1f} |")
    for e in result["errors"]:
        print(f"\nERROR: {e}")
    if sweep_rows:
        print("\nSweep (Ray only; ratio against the plain loop above):\n")
        stages = sorted({x["stage"] for v in sweep_rows.values() for x in v}, key=VARIANTS.index)
        print("| settings | " + " | ".join(stages) + " |")
        print("|---|" + "---:|" * len(stages))
        for name, rs in sweep_rows.items():
            by = {x["stage"]: x for x in rs}
            print(f"| {name} (`{' '.join(SWEEP[name][0])}`) | " + " | ".join(
                f"{by[s]['ratio']:.2f} ({by[s]['ray_s']:.1f} s)" if s in by and "ratio" in by[s] else "-"
                for s in stages) + " |")
    print(f"\nTotal benchmark time {result['total_s']:.0f} s; figures in {args.json}", flush=True)


if __name__ == "__main__":
    main()
