"""WARC to clean text, one core each: our reader (ray_jobs/io/warc.py) against datatrove's WarcReader + Trafilatura.

    python -m benchmarks warc                    # 50 copies of the dolma sample WARCs (1,850 responses, 22 MB)
    python -m benchmarks warc --copies 10 --skip-ours-trafilatura

1. Corpus: the WARC files of ../shared/data/web_samples_dolma/warc (2 files, 37 HTML responses; without it the
   project's shards/sample/warc, 4 responses), each copied --copies times into OUT/corpus, so a run lasts long
   enough to time.
2. Runs, one after the other, each a child process pinned to one core (--cpu; os.sched_setaffinity, inherited by
   its own children), so every figure is per core:
   - ours: `formats.parse_file` over every file (what one read task of a pipeline does), input.warc_extractor =
     resiliparse (the default); once before and once after the others, to show the drift of a shared machine;
   - ours + trafilatura: the same reader with input.warc_extractor = trafilatura (reader vs extractor cost);
   - datatrove: benchmarks/_warc_datatrove_child.py in the datatrove venv (--datatrove-python): WarcReader ->
     Trafilatura() with datatrove's defaults (favour_precision, 1 s timeout per page in a sandbox process) in a
     LocalPipelineExecutor of one task.
   Each child times its own loop (imports and start-up left out): wall seconds, and CPU seconds of it and its
   children (datatrove's sandbox). "documents out" differ by design: datatrove's reader skips the responses
   python-magic does not call HTML when a WARC has no WARC-Identified-Payload-Type (2 of the 37 here), and its
   Trafilatura(deduplicate=True) drops a page whose text it has seen before in the process, so on copies most of
   them (it extracts a page before that check, so the time is comparable; if anything its per-paragraph
   duplicate checks shorten the work on copies).
3. Agreement on the first copy: the word-set Jaccard of each page's text between our two extractors, and how
   many pages either leaves empty.
4. Table to stdout; OUT/result.json with the machine, date, versions and commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "warc"
SHARED = REPO.parent / "shared" / "data" / "web_samples_dolma" / "warc"
SAMPLE = REPO / "shards" / "sample" / "warc"
DATATROVE_PYTHON = "/work/bench-venv-datatrove/bin/python"


def build_corpus(out: Path, copies: int) -> list[Path]:
    src = sorted(SHARED.glob("*.warc.gz")) or sorted(SAMPLE.glob("*.warc.gz"))
    corpus = out / "corpus"
    shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True)
    for i in range(copies):
        for f in src:
            shutil.copyfile(f, corpus / f"c{i:03d}-{f.name}")
    return src


def ours_child(job: dict) -> dict:
    """The child's side of an `ours` run (`--child`): every file through parse_file, pinned to one core."""
    os.sched_setaffinity(0, {job["cpu"]})
    from ray_jobs.config import InputConfig
    from ray_jobs.io.readers import discover, read_group

    cfg = InputConfig(paths=(job["corpus"],), warc_extractor=job["extractor"])
    units = discover(cfg)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    rows = quarantined = chars = 0
    for table in read_group(units, cfg):
        errors = table.column("_error")
        rows += errors.null_count  # a row without an _error is a document
        quarantined += table.num_rows - errors.null_count
        chars += sum(len(t) for t, e in zip(table.column("text").to_pylist(), errors.to_pylist()) if e is None)
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": wall, "cpu_s": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime,
            "docs_out": rows, "chars_out": chars, "quarantined": quarantined}


def run_child(cmd: list[str], job: dict, work: Path, name: str) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    job_path, out_path = work / f"{name}.job.json", work / f"{name}.out.json"
    job_path.write_text(json.dumps(job))
    out_path.unlink(missing_ok=True)
    proc = subprocess.run([*cmd, str(job_path), str(out_path)], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0 or not out_path.exists():
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out_path.read_text())


def agreement(first: list[Path]) -> dict:
    """Word-set Jaccard per page between our two extractors on one copy of the corpus, and empty pages."""
    from ray_jobs.config import InputConfig
    from ray_jobs.io.readers import discover, read_group

    texts = {}
    for extractor in ("resiliparse", "trafilatura"):
        cfg = InputConfig(paths=tuple(str(f) for f in first), warc_extractor=extractor)
        rows = [r for t in read_group(discover(cfg), cfg) for r in t.select(["url", "text", "_error"]).to_pylist()]
        texts[extractor] = [(r["url"], r["text"] if r["_error"] is None else "") for r in rows]
    pairs = [(u, a, b) for (u, a), (_, b) in zip(texts["resiliparse"], texts["trafilatura"])]
    jac = [len(set(a.split()) & set(b.split())) / max(1, len(set(a.split()) | set(b.split()))) for _, a, b in pairs]
    return {
        "pages": len(pairs), "median_jaccard": statistics.median(jac), "mean_jaccard": statistics.mean(jac),
        "pages_jaccard_ge_0.8": sum(j >= 0.8 for j in jac),
        "empty": {k: sum(not t.strip() for _, t in v) for k, v in texts.items()},
        "chars": {k: sum(len(t) for _, t in v) for k, v in texts.items()},
        "lowest": sorted(((round(j, 2), u, len(a), len(b)) for j, (u, a, b) in zip(jac, pairs)))[:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks warc", description=__doc__.split("\n\n")[0])
    ap.add_argument("--copies", type=int, default=50, help="copies of the sample WARCs in the corpus (default 50)")
    ap.add_argument("--cpu", type=int, default=0, help="the core every run is pinned to")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--datatrove-python", default=DATATROVE_PYTHON, help="python of a venv with datatrove, warcio, "
                    "trafilatura, lxml_html_clean, faust-cchardet, python-magic")
    ap.add_argument("--skip-ours-trafilatura", action="store_true", help="leave out our reader + trafilatura")
    ap.add_argument("--child", nargs=2, metavar=("JOB", "OUT"), help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.child:
        job_path, out_path = args.child
        Path(out_path).write_text(json.dumps(ours_child(json.loads(Path(job_path).read_text()))))
        return 0

    src = build_corpus(args.out, args.copies)
    corpus = args.out / "corpus"
    size_mb = sum(f.stat().st_size for f in corpus.iterdir()) / 1e6
    responses = args.copies * sum(1 for _ in _responses(src))
    ours_cmd = [sys.executable, "-m", "benchmarks.warc_bench", "--child"]
    job = {"corpus": str(corpus), "cpu": args.cpu}
    plan = [("ours (resiliparse)", ours_cmd, {**job, "extractor": "resiliparse"}),
            ("datatrove + trafilatura", [args.datatrove_python, str(REPO / "benchmarks" / "_warc_datatrove_child.py")],
             {**job, "work": str(args.out / "datatrove")})]
    if not args.skip_ours_trafilatura:
        plan.append(("ours (trafilatura)", ours_cmd, {**job, "extractor": "trafilatura"}))
    plan.append(("ours (resiliparse) again", ours_cmd, {**job, "extractor": "resiliparse"}))
    shutil.rmtree(args.out / "datatrove", ignore_errors=True)
    results = {}
    for name, cmd, j in plan:
        r = run_child(cmd, j, args.out / "jobs", name.split()[0] + str(len(results)))
        r["responses_per_s"] = responses / r["wall_s"]
        r["responses_per_cpu_s"] = responses / r["cpu_s"]
        results[name] = r
        print(f"{name}: {r['wall_s']:.1f} s, {r['docs_out']} documents", file=sys.stderr)
    agree = agreement(src)

    print(f"\n{args.copies} copies of {len(src)} WARC files: {responses:,} HTML responses, {size_mb:.1f} MB gzip; "
          f"one core each (cpu {args.cpu})\n")
    print("| run | wall s | CPU s | responses/s per core | per CPU s | documents out | characters out |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['responses_per_s']:,.0f} | "
              f"{r['responses_per_cpu_s']:,.0f} | {r['docs_out']:,} | {r['chars_out']:,} |")
    ours = statistics.mean(results[n]["responses_per_s"] for n in results if n.startswith("ours (resiliparse)"))
    theirs = results["datatrove + trafilatura"]["responses_per_s"]
    print(f"\nours (resiliparse, mean of 2 runs) / datatrove + trafilatura, responses per second per core: "
          f"{ours / theirs:.1f}x")
    print(f"agreement of our extractors on one copy: {json.dumps(agree)}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "command": " ".join(["python -m benchmarks warc", *argv]),
        "versions": {p: version(p) for p in ("fastwarc", "resiliparse", "trafilatura", "pyarrow")},
        "corpus": {"copies": args.copies, "files": [str(f) for f in src], "responses": responses, "mb": size_mb},
        "runs": results, "ratio_per_core": ours / theirs, "agreement": agree,
    }, indent=1))
    return 0


def _responses(files: list[Path]):
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    for f in files:
        yield from ArchiveIterator(str(f), record_types=WarcRecordType.response, parse_http=False)


if __name__ == "__main__":
    sys.exit(main())
