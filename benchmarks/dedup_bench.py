"""End-to-end dedup (exact + MinHash-LSH near dedup) on a real local Ray: throughput and memory as the corpus grows.

    python benchmarks/make_dedup_corpus.py --out benchmarks/out/dedup/400mb --size-mb 400
    python benchmarks/dedup_bench.py benchmarks/out/dedup/25mb benchmarks/out/dedup/100mb benchmarks/out/dedup/400mb
    python benchmarks/dedup_bench.py benchmarks/out/dedup/1gb --set dedup.near.cc_fast_path_max_edges=0
    git worktree add /tmp/old <commit> && python benchmarks/dedup_bench.py <corpus> --checkout /tmp/old

Each corpus runs in a child process (`ray_jobs.planner.run_pipeline(stages=("dedup",))`, a fresh local Ray
with `ray.num_cpus`, default 2), so the driver's peak RSS (getrusage of the child) belongs to that run alone. A
sampler thread in the parent adds up the RSS of every process of the Ray session (workers, raylet, GCS) every 0.5
s and keeps the peak, with the size of the Ray spill folder and the CPU seconds of every process of the tree (each
process's last sample). Reported: MB and rows in, seconds, MB/s per core, CPU s and MB per CPU s, rows kept /
exact / near duplicates / duplicate ids, driver peak RSS, all-process peak RSS, the largest single process's
peak USS, peak MB in the spill folder; with `--set dedup.lines.enabled=true` also the documents that lost boilerplate lines and
how many lines went (from `lines_removed` of the kept rows). JSON to --json. `--checkout DIR` runs the child on
the ray_jobs of another checkout (a git worktree of an older commit) with this same harness: before/after figures
from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

CHILD = r"""
import json, resource, sys, time
from ray_jobs.config import load_config
from ray_jobs.planner import run_pipeline
corpus, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = load_config(None, [f'input.paths=["{corpus}"]', f"output.dir={out}", "ray.progress_bars=false", *overrides])
t0 = time.perf_counter()
stats = run_pipeline(cfg, stages=("dedup",))
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
lines = {}
if getattr(cfg.dedup, "lines", None) and cfg.dedup.lines.enabled:  # [dedup.lines] (not in older checkouts)
    import pyarrow.dataset as pads
    removed = pads.dataset(f"{out}/dedup/status=kept", format="parquet").to_table(columns=["lines_removed"])
    removed = removed["lines_removed"].to_numpy()
    lines = {"lines_removed": int(removed.sum()), "docs_changed": int((removed > 0).sum())}
import ray_jobs
print("RESULT " + json.dumps({"seconds": seconds, "driver_peak_rss_mb": rss, "stats": stats["stages"]["dedup"],
                              "lines": lines, "ray_jobs": ray_jobs.__file__}))
"""


def corpus_size(path: Path) -> tuple[int, float]:
    files = sorted(path.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    text_bytes = 0
    for f in files:  # uncompressed text bytes: what "MB of corpus" means in the figures
        meta = pq.ParquetFile(f).metadata
        for g in range(meta.num_row_groups):
            rg = meta.row_group(g)
            for c in range(rg.num_columns):
                if rg.column(c).path_in_schema == "text":
                    text_bytes += rg.column(c).total_uncompressed_size
    return rows, text_bytes / 1e6


class Sampler(threading.Thread):
    """Peak summed RSS of a process tree (the child and everything Ray starts under it), and the peak size of
    the spill folder (Ray deletes spilled objects once freed, so only sampling sees them); also the peak unique
    memory (USS) of the largest single process, which is what bounds a worker."""

    def __init__(self, pid: int, spill: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.spill, self.stop = psutil.Process(pid), spill, threading.Event()
        self.peak = self.peak_spill = self.peak_process = 0.0
        self.cpu: dict[int, float] = {}  # pid -> user + system CPU seconds at its last sample

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = [p.memory_info().rss / 2**20 for p in procs if p.is_running()]
                self.peak = max(self.peak, sum(rss))
                # the largest single process by its unique memory (USS): RSS also counts the object-store pages
                # a worker has read, which are shared and belong to the store, not to the worker
                uss = [p.memory_full_info().uss / 2**20 for p in procs if p.is_running()]
                self.peak_process = max(self.peak_process, *uss)
                for p in procs:  # CPU seconds: what a busy shared machine inflates less than wall time
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
            if self.spill.exists():
                spilled = sum(f.stat().st_size for f in self.spill.rglob("*") if f.is_file()) / 2**20
                self.peak_spill = max(self.peak_spill, spilled)
            self.stop.wait(0.5)


def run_child(code: str, args: list[str], what: str, checkout: Path | None = None) -> dict:
    """`python -c code *args` with Ray's spill folder in a temporary directory, sampled while it runs: its
    `RESULT {json}` line, plus the all-process and largest-process peak RSS and the peak spill (MB)."""
    with tempfile.TemporaryDirectory(prefix="bench_spill_") as tmp:
        spill = Path(tmp) / "spill"
        spill_cfg = {"type": "filesystem", "params": {"directory_path": str(spill)}}
        env = {**os.environ, "RAY_object_spilling_config": json.dumps(spill_cfg)}
        if checkout:  # ahead of the installed (editable) ray_jobs; Ray's local workers inherit the environment
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout.resolve()), env.get("PYTHONPATH")]))
        proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, cwd=checkout or None)
        sampler = Sampler(proc.pid, spill)
        sampler.start()
        out, err = proc.communicate()
        sampler.stop.set()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{err[-3000:]}")
    result = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
    return {**result, "all_processes_peak_rss_mb": round(sampler.peak),
            "largest_process_peak_uss_mb": round(sampler.peak_process), "peak_spilled_mb": round(sampler.peak_spill),
            "cpu_s": round(sum(sampler.cpu.values()))}


def run_one(corpus: Path, overrides: list[str], cpus: int, checkout: Path | None = None) -> dict:
    rows, mb = corpus_size(corpus)
    with tempfile.TemporaryDirectory(prefix="dedup_bench_") as tmp:
        result = run_child(CHILD, [str(corpus.resolve()), str(Path(tmp) / "run"), json.dumps([f"ray.num_cpus={cpus}", *overrides])],
                           f"dedup run on {corpus}", checkout)
    st = result["stats"]
    return {
        "corpus": str(corpus), "rows": rows, "mb": round(mb, 1), "seconds": round(result["seconds"], 1),
        "mb_per_s_per_core": round(mb / result["seconds"] / cpus, 3),
        "kept": st["rows_out"], "exact_duplicate": st["dropped"].get("exact_duplicate", 0),
        "near_duplicate": st["dropped"].get("near_duplicate", 0), "cluster_sizes": st.get("cluster_sizes"),
        "driver_peak_rss_mb": round(result["driver_peak_rss_mb"]),
        "all_processes_peak_rss_mb": result["all_processes_peak_rss_mb"],
        "largest_process_peak_uss_mb": result["largest_process_peak_uss_mb"], "cpu_s": result["cpu_s"],
        "mb_per_cpu_s": round(mb / max(result["cpu_s"], 1), 3),
        "peak_spilled_mb": result["peak_spilled_mb"], "cpus": cpus, "overrides": overrides,
        "checkout": str(checkout or Path(__file__).resolve().parents[1]), "ray_jobs": result["ray_jobs"],
        "duplicate_id": st["dropped"].get("duplicate_id", 0),
        "too_short_after_line_dedup": st["dropped"].get("too_short_after_line_dedup", 0),
        "lines_removed": result.get("lines", {}).get("lines_removed", "-"),
        "docs_changed": result.get("lines", {}).get("docs_changed", "-"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="+", type=Path, help="folders of Parquet files with id and text")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--checkout", type=Path, help="run the ray_jobs of this checkout (default: the installed one)")
    args = ap.parse_args()
    results = [run_one(c, args.overrides, args.cpus, args.checkout) for c in args.corpora]
    cols = ["corpus", "rows", "mb", "seconds", "mb_per_s_per_core", "cpu_s", "mb_per_cpu_s", "kept", "exact_duplicate", "near_duplicate",
            "duplicate_id", "docs_changed", "lines_removed", "too_short_after_line_dedup", "driver_peak_rss_mb",
            "all_processes_peak_rss_mb", "largest_process_peak_uss_mb", "peak_spilled_mb"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d"),
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
