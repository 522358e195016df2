"""The main job (`ray-jobs run`: clean, dedup, split, leakage, tokenize, pack) on a local multi-node Ray cluster
(cluster/local_cluster.py) with the same total CPUs split over 1, 2 or 4 worker nodes.

    python benchmarks/cluster_bench.py benchmarks/out/dedup/25mb --cpus 4 --nodes 1 2 4

Each layout is a fresh cluster (a 0-CPU head and N worker nodes of cpus/N CPUs each, every node its own raylet and
object store, all on this machine); the driver is `ray-jobs run` with RAY_ADDRESS pointing at it. Reported:
seconds, MB/s, and the time relative to one worker node. On one machine this measures what splitting a job over
nodes costs (object transfers between stores, scheduling across raylets), not what more machines would add.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dedup_bench import corpus_size  # noqa: E402

_spec = importlib.util.spec_from_file_location("local_cluster", HERE.parent / "cluster" / "local_cluster.py")
local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_cluster)
BIN = Path(sys.executable).parent


def run_layout(corpus: Path, nodes: int, cpus: int, object_store_mb: int, overrides: list[str]) -> dict:
    per_node = cpus // nodes
    with tempfile.TemporaryDirectory(prefix="cluster_bench_") as tmp:
        state = Path(tmp) / "state.json"
        path_env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        info = local_cluster.start(nodes, per_node, object_store_mb, 0, state, env=path_env)
        try:
            local_cluster.wait_for_nodes(nodes + 1, info["gcs"], info["token_file"])
            env = {**os.environ, **path_env, "RAY_ADDRESS": info["gcs"], **local_cluster.auth_env(info["token_file"])}
            cmd = [str(BIN / "ray-jobs"), "run", "--output", str(Path(tmp) / "run"), "--set",
                   f'input.paths=["{corpus}"]', "--set", "ray.progress_bars=false",
                   *[a for o in overrides for a in ("--set", o)]]
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(f"run on {nodes} x {per_node} failed:\n{out.stderr[-3000:]}")
            stats = json.loads((Path(tmp) / "run" / "stats.json").read_text())
        finally:
            local_cluster.stop(state)
    return {"nodes": nodes, "cpus_per_node": per_node, "seconds": round(seconds, 1),
            "kept": stats["stages"]["split"]["rows_out"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--cpus", type=int, default=4, help="total CPUs of the worker nodes (logical)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--object-store-mb", type=int, default=512, help="per node")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows, mb = corpus_size(args.corpus)
    results = [run_layout(args.corpus.resolve(), n, args.cpus, args.object_store_mb, args.overrides)
               for n in args.nodes]
    base = results[0]["seconds"]
    for r in results:
        r["mb_per_s"] = round(mb / r["seconds"], 2)
        r["time_vs_first"] = round(r["seconds"] / base, 2)
    print(f"{args.corpus}: {rows:,} rows, {mb:.1f} MB of text, {args.cpus} CPUs in all")
    print("| nodes x CPUs | seconds | MB/s | time vs first | kept |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['nodes']} x {r['cpus_per_node']} | {r['seconds']} | {r['mb_per_s']} | {r['time_vs_first']} | "
              f"{r['kept']:,} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d"),
                                         "corpus": str(args.corpus), "rows": rows, "mb": round(mb, 1),
                                         "cpus": args.cpus, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
