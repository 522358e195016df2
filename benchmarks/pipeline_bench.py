"""The default pipeline end to end: `ray-jobs run` against the same step functions fused in a plain loop.

    python -m benchmarks pipeline --size-mb 25                  # both: ~2-5 min on 2 shared cores
    python -m benchmarks pipeline --size-mb 1100 --cores 2      # the lead's scale runs: 1100 and 4400
    python -m benchmarks pipeline --size-mb 25 --skip-plain     # Ray only (or --skip-ray)

1. Corpus: make_dedup_corpus.py (real books, ~15 % derived copies; Parquet id/text) under
   OUT/<N>mb/corpus, built once and reused (keyed by size). Shards of N/8 MB of text (1-64 MB), so even 25 MB
   has 8 files: the plain loop parallelises over files, and Ray's reader groups files the same way.
2. ray: `ray-jobs run --set input.paths=[CORPUS] --output OUT/<N>mb/ray --set ray.progress_bars=false
   --set ray.num_cpus=<cores>` in a subprocess, into a fresh folder (a re-run would skip the finished passes).
   A sampler thread reads every 0.5 s: the driver's RSS, and the summed RSS and USS of the Ray worker processes
   (children of the raylet named `ray::...` or running default_worker.py: tasks, actors, idle workers; not the
   raylet, GCS or agents). USS is what a worker owns; RSS also counts the object-store pages it has mapped,
   which are shared, so the RSS sum over-counts. Per pass: the steps' markers (`finished`, `pass`) and Ray's
   "Started a local Ray instance" log line; every "Dataset ... execution finished in X seconds" line is kept.
3. plain: the plan's own step objects (registry ops, planner.FusedRows, MinHashDigest, dedup/split/leakage pure
   functions) in a child process that starts `cores` worker processes (multiprocessing, spawn, one thread each:
   OMP/RAYON = 1, TOKENIZERS_PARALLELISM = false): pass 1 over file groups (read_group -> clean -> digest ->
   Parquet by status), the global steps in one process over the compact columns (no Ray), pass 3 over the kept
   clean files (planner.applied -> tokenize -> pack -> Parquet by split). Its driver only hands out work.
4. Checks: kept ids (RUN/leakage/status=kept: count and an order-free hash of the id set) and packed tokens
   (sum of seq_lens; Ray's also from stats.json) must be equal, else exit 1 after the figures are written.
5. Table to stdout; OUT/<N>mb/result.json with the machine, date, versions and command lines. The runs go one
   after the other (ray, then plain). "CPU s" is the CPU time of each run's process tree (every Ray process,
   raylet and GCS included); "others' CPU s" is what the rest of the machine used meanwhile (busy CPU time
   from /proc/stat minus the run's and the sampler's): above a few seconds the wall times are not comparable,
   and the per-CPU-second ratio printed last is the steadier figure.

Memory notes: both drivers load the config, and `load_config` imports every registered step (numba,
tokenizers, Ray's client: ~370 MB of RSS), so the plain driver's peak is that, not data. Ray's worker figures
include its idle pre-started workers (~80 MB RSS each).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "pipeline"
SAMPLE_S = 0.5  # sampling period: a Ray task lives ~0.1-60 s here, peaks of a few hundred ms may be missed
# USS reads /proc/<pid>/smaps of every worker: sampled every 0.5 s it cost 112 CPU s of a 699 s Ray run at 1.1 GB
# (16 % of a core taken from the run it measures); every 5 s it is a tenth of that
USS_EVERY = 10
# 8 shards at least (1-64 MB of text each): 2 cores x 4 units of work keeps both busy to the end
SHARDS_MIN, SHARD_MB_MAX = 8, 64.0
PLAIN_CHILD = "from benchmarks.pipeline_bench import plain_child; import sys; plain_child(sys.argv[1])"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


# ------------------------------------------------------------------------------------------------ corpus


def size_tag(size_mb: float) -> str:
    return f"{size_mb:g}mb"


def build_corpus(size_mb: float, folder: Path) -> Path:
    """make_dedup_corpus.py into folder (reused when its _info.json says it is complete)."""
    if (folder / "_info.json").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    shard_mb = min(SHARD_MB_MAX, max(1.0, size_mb / SHARDS_MIN))
    cmd = [sys.executable, str(REPO / "benchmarks" / "make_dedup_corpus.py"), "--out", str(folder),
           "--size-mb", f"{size_mb:g}", "--shard-mb", f"{shard_mb:g}"]
    print("corpus: " + shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return folder


def corpus_figures(folder: Path) -> dict:
    info = json.loads((folder / "_info.json").read_text())
    files = sorted(folder.glob("*.parquet"))
    return {"path": str(folder), "rows": info["rows"], "text_mb": info["mb"], "files": len(files),
            "parquet_bytes": sum(f.stat().st_size for f in files)}


def tree_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------------ sampling


_WORKER: dict[int, bool] = {}  # pid -> is a Ray worker (read from its command line once)


def ray_workers(root: psutil.Process) -> list[psutil.Process]:
    """Children of the raylet that run tasks or actors (`ray::<name>` once started, default_worker.py before);
    not its agents (ray::DashboardAgent, ray::RuntimeEnvAgent: ~200 MB together, there whatever the job)."""
    raylets = [p for p in root.children(recursive=True) if p.name() == "raylet"]
    out = []
    for c in (c for r in raylets for c in r.children()):
        if c.pid not in _WORKER or not _WORKER[c.pid]:  # a worker starts as default_worker.py, renamed later
            _WORKER[c.pid] = _is_ray_worker(c)
        if _WORKER[c.pid]:
            out.append(c)
    return out


def _is_ray_worker(p: psutil.Process) -> bool:
    cmd = p.cmdline()
    if not cmd or "Agent" in cmd[0] or any("agent" in a for a in cmd[1:3]):
        return False
    return cmd[0].startswith("ray::") or any("default_worker.py" in a for a in cmd)


def plain_workers(root: psutil.Process) -> list[psutil.Process]:
    """The pool processes (multiprocessing's resource tracker, ~15 MB, is not one)."""
    return [p for p in root.children(recursive=True) if not any("resource_tracker" in a for a in p.cmdline())]


class Sampler(threading.Thread):
    """Every SAMPLE_S: RSS of the root (the driver); summed RSS and USS of `workers(root)`; summed RSS of the
    whole tree. Also the CPU seconds of every process seen (its last sample), to tell the run's CPU from what
    other users of the machine took meanwhile."""

    def __init__(self, pid: int, workers) -> None:
        super().__init__(daemon=True)
        self.root, self.workers, self.stop = psutil.Process(pid), workers, threading.Event()
        self.peak = {"driver_rss_mb": 0.0, "workers_rss_mb": 0.0, "workers_uss_mb": 0.0, "all_rss_mb": 0.0}
        self.cpu: dict[int, float] = {}
        self.driver: list[tuple[float, float]] = []  # (time, driver RSS MB): its peak per pass
        self.uss: list[tuple[float, float]] = []  # (time, workers' USS MB): their peak per pass
        self.cost_s = 0.0  # this thread's own CPU: what sampling took from the run
        self.n = 0

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.thread_time()
            try:
                self._sample()
            except psutil.Error:
                pass  # a process ended between listing and reading: the next sample sees the rest
            self.cost_s += time.thread_time() - t
            self.stop.wait(SAMPLE_S)

    def _sample(self) -> None:
        tree = [self.root, *self.root.children(recursive=True)]
        workers = self.workers(self.root)
        mb = 2**20
        figures = {"driver_rss_mb": self.root.memory_info().rss / mb,
                   "workers_rss_mb": sum(_safe(lambda p: p.memory_info().rss, w) for w in workers) / mb,
                   "all_rss_mb": sum(_safe(lambda p: p.memory_info().rss, p) for p in tree) / mb}
        self.n += 1
        self.driver.append((time.time(), figures["driver_rss_mb"]))
        if self.n % USS_EVERY == 1:
            figures["workers_uss_mb"] = sum(_safe(lambda p: p.memory_full_info().uss, w) for w in workers) / mb
            self.uss.append((time.time(), figures["workers_uss_mb"]))
        for k, v in figures.items():
            self.peak[k] = max(self.peak[k], v)
        for p in tree:
            self.cpu[p.pid] = _safe(lambda q: sum(q.cpu_times()[:2]), p)

    def result(self) -> dict:
        return {k: round(v) for k, v in self.peak.items()} | {"tree_cpu_s": round(sum(self.cpu.values()), 1),
                                                              "sampler_cpu_s": round(self.cost_s, 1),
                                                              "driver_rss_timeline": self.driver,
                                                              "workers_uss_timeline": self.uss}


def _safe(fn, p: psutil.Process) -> float:
    try:
        return fn(p)
    except psutil.Error:
        return 0.0


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def sampled(cmd: list[str], workers, log: Path, env: dict | None = None) -> dict:
    """Run cmd with stdout+stderr to `log`, sampled; seconds, exit code, memory peaks, CPU of others."""
    busy0, load0, t0 = busy_cpu_s(), os.getloadavg()[0], time.time()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        sampler = Sampler(proc.pid, workers)
        sampler.start()
        rc = proc.wait()
    t1 = time.time()
    sampler.stop.set()
    sampler.join()
    mem = sampler.result()
    other = busy_cpu_s() - busy0 - mem["tree_cpu_s"] - mem["sampler_cpu_s"]
    return {"t0": t0, "t1": t1, "seconds": round(t1 - t0, 2), "rc": rc, **mem,
            "other_cpu_s": round(max(other, 0.0), 1), "load_before": load0, "load_after": os.getloadavg()[0]}


def failed(what: str, log: Path) -> RuntimeError:
    return RuntimeError(f"{what} failed; the end of {log}:\n" + "".join(log.read_text().splitlines(True)[-40:]))


# ------------------------------------------------------------------------------------------------ ray


def ray_command(corpus: Path, run_dir: Path, cores: int) -> list[str]:
    exe = Path(sys.executable).with_name("ray-jobs")
    return [str(exe) if exe.exists() else "ray-jobs", "run", "--set", f'input.paths=["{corpus}"]', "--output",
            str(run_dir), "--set", "ray.progress_bars=false", "--set", f"ray.num_cpus={cores}"]


def run_ray(corpus: Path, run_dir: Path, cores: int) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)  # a finished run dir would make every pass a skip
    log = run_dir.with_name("ray.log")
    cmd = ray_command(corpus, run_dir, cores)
    print("ray: " + shlex.join(cmd), flush=True)
    res = sampled(cmd, ray_workers, log)
    if res["rc"] != 0:
        raise failed("ray-jobs run", log)
    bounds = pass_bounds(run_dir, res["t0"], res["t1"], log.read_text())
    res["passes"], res["ray_data_executions"] = ray_timeline(bounds, log.read_text())
    for what in ("driver_rss", "workers_uss"):
        timeline = res.pop(f"{what}_timeline")
        res[f"{what}_peak_mb_by_pass"] = {name: round(max((mb for t, mb in timeline if a < t <= b), default=0))
                                          for name, a, b in bounds}
    res["command"] = shlex.join(cmd)
    return res


LOG_LINE = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\s+INFO .*"  # Ray's log lines: local time, ms


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def pass_bounds(run_dir: Path, t0: float, t1: float, log_text: str) -> list[tuple[str, float, float]]:
    """(name, start, end) of: start (process + ray.init, to Ray's "Started a local Ray instance"), pass k (to the
    last marker of pass k), tail (stats, manifest, report.html, Ray shutdown)."""
    ends: dict[int, float] = {}
    for m in run_dir.glob("_SUCCESS.*"):
        info = json.loads(m.read_text())
        if info.get("pass"):
            ends[info["pass"]] = max(ends.get(info["pass"], 0.0), info["finished"])
    started = re.search(LOG_LINE + "Started a local Ray instance", log_text, re.M)
    prev = _log_time(started.group(1)) if started else t0
    bounds = [("start", t0, prev)]
    for k, end in sorted(ends.items()) + [(0, t1)]:
        bounds.append((f"pass{k}" if k else "tail", prev, end))
        prev = end
    return bounds


def ray_timeline(bounds: list[tuple[str, float, float]], log_text: str) -> tuple[dict, dict]:
    """Seconds of each of `bounds`, and per pass the Ray Data executions that finished in it ("Dataset ...
    execution finished in X seconds"): how many, their summed seconds."""
    runs = [(_log_time(ts), float(x)) for ts, x in
            re.findall(LOG_LINE + r"execution finished in ([\d.]+) seconds", log_text, re.M)]
    passes, executions = {}, {}
    for name, a, b in bounds:
        passes[name] = round(b - a, 2)
        if name != "start":
            mine = [x for ts, x in runs if a < ts <= b]
            executions[name] = {"n": len(mine), "seconds": round(sum(mine), 2)}
    return passes, executions


# ------------------------------------------------------------------------------------------------ plain


def run_plain(corpus: Path, run_dir: Path, cores: int) -> dict:
    shutil.rmtree(run_dir, ignore_errors=True)
    log = run_dir.with_name("plain.log")
    args = json.dumps({"corpus": str(corpus), "run": str(run_dir), "cores": cores})
    cmd = [sys.executable, "-c", PLAIN_CHILD, args]
    print(f"plain: {cores} processes, one thread each: {shlex.join(cmd)}", flush=True)
    res = sampled(cmd, plain_workers, log, env={**os.environ, **ONE_THREAD})
    res.pop("driver_rss_timeline")  # its driver only hands out work
    res.pop("workers_uss_timeline")
    if res["rc"] != 0:
        raise failed("the plain loop", log)
    child = json.loads(next(line[7:] for line in log.read_text().splitlines() if line.startswith("RESULT ")))
    passes = child.pop("passes")
    res["passes"] = {"start": round(child.pop("t_main") - res["t0"], 2), **passes,
                     "tail": round(res["t1"] - child.pop("t_done"), 2)}
    res["command"] = shlex.join(cmd)
    return res | child


def plain_child(args_json: str) -> None:
    """The plain run (its own process, so the sampler sees only it): three passes, timings as a RESULT line."""
    import multiprocessing as mp

    t_main = time.time()
    a = json.loads(args_json)
    # the driver imports no step module (they bring numba, tokenizers and Ray's client: ~300 MB of RSS); the
    # workers check the plan
    cfg, run, cores = plain_config(a["corpus"], a["run"]), Path(a["run"]), a["cores"]
    run.mkdir(parents=True)
    ctx = mp.get_context("spawn")  # no fork of a process that holds pyarrow's thread pools
    out: dict = {"passes": {}}
    t = time.time()
    with ctx.Pool(cores, init_worker, (cfg, str(run), 1)) as pool:
        out["pass1_rows_in"] = sum(pool.imap_unordered(pass1_task, pass1_units(cfg)))
    merge_spilled(run, 1, PLAN[0][1])
    out["passes"]["pass1"] = round(time.time() - t, 2)
    t = time.time()
    with ctx.Pool(1) as pool:  # the global steps in one worker process: the driver only hands out work
        out["global"] = pool.apply(global_steps, (cfg, str(run)))
    out["passes"]["pass2"] = round(time.time() - t, 2)
    t = time.time()
    with ctx.Pool(cores, init_worker, (cfg, str(run), 3)) as pool:
        out["pass3_rows_in"] = sum(pool.imap_unordered(pass3_task, pass3_units(run)))
    merge_spilled(run, 3, PLAN[2][1])
    out["passes"]["pass3"] = round(time.time() - t, 2)
    print("RESULT " + json.dumps(out | {"t_main": t_main, "t_done": time.time()}), flush=True)


PLAN = [("text", ["clean"]), ("compact", ["dedup", "split", "leakage"]), ("text", ["tokenize", "pack"])]
BATCH_FLUSH_BYTES = 32 * 2**20  # a writer holds at most ~32 MB per partition value before writing a row group
_W: dict = {}  # a pool process's state, built once in init_worker (as a Ray actor builds its stages once)


def plain_config(corpus: str, run: str):
    from ray_jobs.config import load_config

    return load_config(None, [f'input.paths=["{corpus}"]', f"output.dir={run}"])


def check_plan(cfg) -> list:
    """The planner's passes for cfg, which must be the default plan this loop mirrors (the global steps are
    written out below for the default settings: near dedup, a hash split, leakage without eval sets)."""
    from ray_jobs.planner import plan
    from ray_jobs.steps import registry

    passes = plan([s for s in registry.steps() if s.enabled(cfg)])
    shape = [(p.kind, [s.name for s in p.steps]) for p in passes]
    near = cfg.dedup.near
    if shape != PLAN or cfg.dedup.method != "near" or near.index_from or cfg.leakage.eval_paths:
        raise SystemExit(f"the plain loop mirrors the default plan {PLAN} (near dedup on, no index_from, no "
                         f"leakage.eval_paths); this config plans {shape}")
    return passes


def digest_columns(cfg) -> tuple[str, ...]:
    """Every digest column a text pass can add (what the planner strips before it writes decisions)."""
    from ray_jobs.steps import registry

    return tuple(dict.fromkeys(c for s in registry.steps() if s.digest is not None for c in s.digest.columns(cfg)))


def init_worker(cfg, run: str, pass_no: int) -> None:
    """The pass's row steps as the planner fuses them (planner.FusedRows, its stages set up once)."""
    import pyarrow.parquet as pq

    from ray_jobs.planner import FusedRows, applied

    p = check_plan(cfg)[pass_no - 1]
    last = p.steps[-1]
    fused = FusedRows([(s.name, s.ops(cfg)) for s in p.steps], [d.op(cfg) for d in p.digests],
                      str(Path(run) / f".pass{pass_no}.spill"), last.partition)
    fused.setup()
    # the planner's batch: ray.batch_size, or pack.docs_per_batch in a pass with pack (1,024 / 4,096 rows)
    batch = max([cfg.ray.batch_size] + [cfg.pack.docs_per_batch for s in p.steps if s.name == "pack"])
    _W.update(cfg=cfg, run=Path(run), fused=fused, last=last, batch=batch, digests=digest_columns(cfg))
    if pass_no == 3:  # the leakage step's kept decisions, every worker a copy (Ray: a side table to each task)
        files = sorted((Path(run) / "leakage" / "status=kept").glob("*.parquet"))
        _W["applied"] = applied(pa_concat([pq.read_table(f) for f in files]))


def pa_concat(tables: list):
    import pyarrow as pa

    return pa.concat_tables(tables, promote_options="default")


def pass1_units(cfg) -> list:
    """Read groups as runtime.read_corpus cuts them for Ray (readers.file_groups, READ_GROUPS asked for)."""
    from ray_jobs.io.readers import READ_GROUPS, discover, file_groups

    return list(enumerate(file_groups(discover(cfg.input), READ_GROUPS)))


def pass1_task(unit) -> int:
    """One read group: read -> clean -> MinHash digest -> Parquet by status (RUN/clean/status=*)."""
    from ray_jobs.io.readers import read_group

    i, group = unit
    w, rows = _W, 0
    writer = PartWriter(w["run"] / w["last"].name, w["last"].partition, f"{i:05d}")
    for table in read_group(group, w["cfg"].input):
        rows += len(table)
        for off in range(0, len(table), w["batch"]):
            writer.write(w["fused"](table.slice(off, w["batch"])))
    writer.close()
    return rows


def pass3_units(run: Path) -> list:
    return list(enumerate(sorted((run / "clean" / "status=kept").glob("*.parquet"))))


def pass3_task(unit) -> int:
    """One clean kept file: without the digest columns -> applied decisions -> tokenize -> pack -> RUN/pack."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    i, path = unit
    w, rows = _W, 0
    pf = pq.ParquetFile(path)
    cols = [c for c in pf.schema_arrow.names if c not in w["digests"]]
    writer = PartWriter(w["run"] / w["last"].name, w["last"].partition, f"{i:05d}")
    kept = (w["applied"](pa.Table.from_batches([b])) for b in pf.iter_batches(batch_size=w["batch"], columns=cols))
    for table in rebatch(kept, w["batch"]):
        rows += len(table)
        writer.write(w["fused"](table))
    writer.close()
    return rows


def rebatch(tables, size: int):
    """Tables of `size` rows (the last shorter): Ray forms the batches after the decisions are applied."""
    buf, n = [], 0
    for t in tables:
        buf.append(t)
        n += len(t)
        while n >= size:
            whole = pa_concat(buf)
            yield whole.slice(0, size)
            rest = whole.slice(size)
            buf, n = [rest], len(rest)
    if n:
        yield pa_concat(buf)


class PartWriter:
    """Rows -> DIR/<col>=<value>/part-<tag>.parquet (zstd, without the column): what Ray's write_parquet with
    partition_cols leaves. Buffers up to BATCH_FLUSH_BYTES per value, so row groups are not 1,024 rows."""

    def __init__(self, out: Path, col: str, tag: str) -> None:
        self.out, self.col, self.tag = out, col, tag
        self.buf: dict[str, list] = {}
        self.writers: dict = {}

    def write(self, table) -> None:
        import pyarrow.compute as pc

        for value in pc.unique(table[self.col]).to_pylist() if len(table) else []:
            self.buf.setdefault(value, []).append(table.filter(pc.equal(table[self.col], value)).drop_columns(
                [self.col]))
            if sum(t.nbytes for t in self.buf[value]) >= BATCH_FLUSH_BYTES:
                self._flush(value)

    def _flush(self, value: str) -> None:
        import pyarrow.parquet as pq

        from ray_jobs.rundir import PARQUET_ARGS

        part = pa_concat(self.buf.pop(value, []))
        w = self.writers.get(value)
        if w is None:
            folder = self.out / f"{self.col}={value}"
            folder.mkdir(parents=True, exist_ok=True)
            w = self.writers[value] = pq.ParquetWriter(folder / f"part-{self.tag}.parquet", part.schema,
                                                       **PARQUET_ARGS)
        w.write_table(part if part.schema == w.schema else part.cast(w.schema))

    def close(self) -> None:
        for value in list(self.buf):
            self._flush(value)
        for w in self.writers.values():
            w.close()


def merge_spilled(run: Path, pass_no: int, names: list[str]) -> None:
    """FusedRows' spilled rows (a step's drops inside a pass) into RUN/<step>/, as the planner merges them."""
    spill = run / f".pass{pass_no}.spill"
    for name in names:
        src = spill / name
        for sub in sorted(src.iterdir()) if src.is_dir() else []:
            (run / name).mkdir(parents=True, exist_ok=True)
            os.replace(sub, run / name / sub.name)
    shutil.rmtree(spill, ignore_errors=True)


# -- pass 2: the global steps over the compact rows, in one process, with the planner's own code


def global_steps(cfg, run: str) -> dict:
    """dedup -> split -> leakage over (id + digest columns) of RUN/clean/status=kept, each writing its decisions
    and side tables: planner.decide_steps with every runtime call in this process (runtime.in_process), which is
    also what the planner runs in one Ray task below ray.local_compact_mb."""
    import pyarrow.parquet as pq

    from ray_jobs import runtime, schema
    from ray_jobs.planner import decide_steps

    steps = check_plan(cfg)[1].steps  # imports the steps: not timed
    keys = {c for s in steps for c in s.key_columns(cfg)}
    digests = digest_columns(cfg)
    run, t = Path(run), time.time()
    kept = run / "clean" / "status=kept"
    have = set(pq.read_schema(next(kept.glob("*.parquet"))).names)
    cols = [schema.ID] + [c for c in digests if c in have] + sorted(keys & have - {schema.ID})
    runtime.in_process(decide_steps, cfg, steps, kept, cols, [run / s.name for s in steps], digests)
    return {"global_s": round(time.time() - t, 2)}


# ------------------------------------------------------------------------------------------------ checks


def outcome(run_dir: Path) -> dict:
    """What both runs must agree on: kept ids after leakage (count, order-free hash) and packed tokens."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ray_jobs.steps.dedup.lsh import node_ids

    ids = [pq.read_table(f, columns=["id"])["id"] for f in sorted((run_dir / "leakage" / "status=kept").rglob(
        "*.parquet"))]
    hashes = np.concatenate([node_ids(c) for c in ids]) if ids else np.zeros(0, np.uint64)
    packed = sum(int(pc.sum(pc.list_flatten(pq.read_table(f, columns=["seq_lens"])["seq_lens"])).as_py() or 0)
                 for f in sorted((run_dir / "pack").glob("split=*/**/*.parquet")))
    out = {"kept_ids": len(hashes), "kept_ids_hash": f"{int(hashes.sum(dtype=np.uint64)):016x}",
           "packed_tokens": packed, "written_bytes": tree_bytes(run_dir)}
    stats = run_dir / "stats.json"
    if stats.is_file():
        out["stats_packed_tokens"] = json.loads(stats.read_text())["stages"]["pack"]["packing"]["packed_tokens"]
    return out


def checks(ray: dict, plain: dict) -> list[tuple[str, bool, str]]:
    r, p = ray["outcome"], plain["outcome"]
    rows = [("kept ids (leakage/status=kept)", r["kept_ids"] == p["kept_ids"], f"{r['kept_ids']:,} vs {p['kept_ids']:,}"),
            ("the same kept id set (xxh3 sum)", r["kept_ids_hash"] == p["kept_ids_hash"],
             f"{r['kept_ids_hash']} vs {p['kept_ids_hash']}"),
            ("packed tokens", r["packed_tokens"] == p["packed_tokens"],
             f"{r['packed_tokens']:,} vs {p['packed_tokens']:,}")]
    if "stats_packed_tokens" in r:
        rows.append(("ray stats.json = its pack files", r["stats_packed_tokens"] == r["packed_tokens"],
                     f"{r['stats_packed_tokens']:,} vs {r['packed_tokens']:,}"))
    return rows


# ------------------------------------------------------------------------------------------------ report


def figures(res: dict, corpus: dict, cores: int) -> dict:
    o, s = res["outcome"], res["seconds"]
    return {"wall_s": s, "passes_s": res["passes"], "input_mb": corpus["text_mb"],
            "mb_per_s_per_core": round(corpus["text_mb"] / s / cores, 3), "packed_tokens": o["packed_tokens"],
            "tokens_per_s": round(o["packed_tokens"] / s), "driver_peak_rss_mb": res["driver_rss_mb"],
            "workers_peak_rss_mb": res["workers_rss_mb"], "workers_peak_uss_mb": res["workers_uss_mb"],
            "all_processes_peak_rss_mb": res["all_rss_mb"], "written_mb": round(o["written_bytes"] / 1e6, 1),
            "written_vs_input_parquet": round(o["written_bytes"] / corpus["parquet_bytes"], 2),
            "cpu_s": res["tree_cpu_s"], "other_users_cpu_s": res["other_cpu_s"]}


def table(rows: dict[str, dict]) -> str:
    head = ["run", "wall s", "start / pass 1 / 2 / 3 / tail s", "input MB", "MB/s per core", "packed tokens",
            "tokens/s", "driver peak RSS MB", "workers peak RSS MB (sum)", "workers peak USS MB (sum)",
            "written MB (x input Parquet)", "CPU s (others' CPU s)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, f in rows.items():
        p = f["passes_s"]
        passes = " / ".join(f"{p.get(k, 0):.1f}" for k in ("start", "pass1", "pass2", "pass3", "tail"))
        lines.append("| " + " | ".join([
            name, f"{f['wall_s']:.1f}", passes, f"{f['input_mb']:.1f}", f"{f['mb_per_s_per_core']:.3f}",
            f"{f['packed_tokens']:,}", f"{f['tokens_per_s']:,}", f"{f['driver_peak_rss_mb']:,}",
            f"{f['workers_peak_rss_mb']:,}", f"{f['workers_peak_uss_mb']:,}",
            f"{f['written_mb']:,} ({f['written_vs_input_parquet']}x)", f"{f['cpu_s']} ({f['other_users_cpu_s']})"]) + " |")
    return "\n".join(lines)


def machine() -> dict:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "hostname": platform.node()}


def versions() -> dict:
    from importlib.metadata import version

    return {"python": platform.python_version(), **{p: version(p) for p in ("ray", "pyarrow", "tokenizers", "numpy",
                                                                             "psutil")}}


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "ray_jobs"], capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# ------------------------------------------------------------------------------------------------ main


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, required=True, help="corpus size in MB of text (1e6 bytes)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder for <N>mb/ (corpus, runs, result.json); {OUT}")
    ap.add_argument("--cores", type=int, default=2, help="ray.num_cpus, and the plain loop's processes")
    ap.add_argument("--skip-plain", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    here = (args.out / size_tag(args.size_mb)).resolve()
    here.mkdir(parents=True, exist_ok=True)
    corpus = corpus_figures(build_corpus(args.size_mb, here / "corpus"))
    print(f"corpus: {corpus['rows']:,} documents, {corpus['text_mb']} MB of text, {corpus['files']} files, "
          f"{corpus['parquet_bytes'] / 1e6:.1f} MB Parquet", flush=True)
    runs: dict[str, dict] = {}
    if not args.skip_ray:
        runs["ray"] = run_ray(Path(corpus["path"]), here / "ray", args.cores)
    if not args.skip_plain:
        runs["plain"] = run_plain(Path(corpus["path"]), here / "plain", args.cores)
    for name, res in runs.items():
        res["outcome"] = outcome(here / name)
    rows = {name: figures(res, corpus, args.cores) for name, res in runs.items()}
    print("\n" + table(rows))
    if "ray" in runs:
        for what in ("driver_rss", "workers_uss"):
            print(f"ray: {what.replace('_', ' ')} peak MB per pass: " + ", ".join(
                f"{k} {v}" for k, v in runs["ray"][f"{what}_peak_mb_by_pass"].items()))
    result = {"date": datetime.now().astimezone().isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "ray_jobs_commit": git_commit(), "cores": args.cores, "corpus": corpus,
              "command": "python -m benchmarks pipeline " + shlex.join(sys.argv[1:] if argv is None else argv),
              "figures": rows, "runs": runs}
    ok = True
    if len(runs) == 2:
        result["ray_vs_plain_throughput"] = round(runs["plain"]["seconds"] / runs["ray"]["seconds"], 3)
        # CPU seconds of each process tree: steadier than wall time when other users load the machine
        result["ray_vs_plain_per_cpu_s"] = round(runs["plain"]["tree_cpu_s"] / runs["ray"]["tree_cpu_s"], 3)
        ex = runs["ray"]["ray_data_executions"]
        print("\nray: Ray Data executions per pass (count, summed s): " + "; ".join(
            f"{k} {v['n']}, {v['seconds']:.1f}" for k, v in ex.items() if v["n"]))
        print(f"Ray / plain throughput (same input, same {args.cores} cores): {result['ray_vs_plain_throughput']} "
              f"on wall time, {result['ray_vs_plain_per_cpu_s']} per CPU second (plain CPU s / Ray CPU s)")
        result["checks"] = [{"check": c, "ok": good, "ray vs plain": d} for c, good, d in checks(runs["ray"],
                                                                                                 runs["plain"])]
        for c in result["checks"]:
            print(f"check {'ok    ' if c['ok'] else 'FAILED'} {c['check']}: {c['ray vs plain']}")
        ok = all(c["ok"] for c in result["checks"])
    (here / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{here / 'result.json'}")
    if not ok:
        print("CHECK FAILED: the Ray run and the plain loop made different decisions (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
