"""datatrove's WarcReader -> Trafilatura extractor over a folder of WARC files, as the child process of
`python -m benchmarks warc`. Runs with the datatrove venv's python (it imports datatrove, warcio, trafilatura):

    /work/bench-venv-datatrove/bin/python benchmarks/_warc_datatrove_child.py JOB.json OUT.json

JOB: {"corpus" (folder of .warc.gz), "work" (a fresh folder for datatrove's logs), "cpu" (the core to pin to)}.
OUT: seconds (wall, and CPU of this process plus the extractor's sandbox process), documents read by the reader,
documents with text after extraction, their characters, datatrove's per-step stats, versions.
One task, one worker: LocalPipelineExecutor runs it in this process; the Trafilatura step extracts in its
sandbox process (datatrove's per-document timeout) while this one waits, so both are pinned to the same core.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from importlib.metadata import version
from pathlib import Path


def main(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    os.sched_setaffinity(0, {job["cpu"]})  # inherited by the extractor's sandbox process
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    counts = {"docs": 0, "chars": 0}

    def count(data, rank: int = 0, world_size: int = 1):  # the pipeline's last step: what came out
        for doc in data:
            counts["docs"] += 1
            counts["chars"] += len(doc.text)
            yield doc

    executor = LocalPipelineExecutor(
        [WarcReader(job["corpus"], glob_pattern="*.warc.gz"), Trafilatura(), count],  # datatrove's defaults:
        tasks=1, workers=1, logging_dir=str(Path(job["work"]) / "logs"))  # favour_precision, timeout 1 s
    cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    stats = executor.run()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime for a, b in zip(cpu0, cpu1))
    steps = {s.name: {k: v.total if hasattr(v, "total") else v for k, v in s.stats.items()}
             for s in stats.stats} if hasattr(stats, "stats") else {}
    Path(out_path).write_text(json.dumps({
        "wall_s": wall, "cpu_s": cpu, "docs_out": counts["docs"], "chars_out": counts["chars"],
        "steps": steps, "versions": {p: version(p) for p in ("datatrove", "trafilatura", "warcio", "lxml")},
    }, indent=1, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
