"""decontam throughput and index memory (issue 16), in one process (one core):

    python benchmarks/decontam_bench.py --reps 5 --big-mb 40

1. The sample (shards/sample/parquet) against the test eval set (tests/data/decontam): DecontamStage against a plain
   Python loop (words by str.translate + split, a set of 13-word tuples), interleaved rep by rep, same rows, same
   decisions checked.
2. A large index: the Gutenberg books of ../shared/data (first --big-mb MB, cut into 200-word items) as the eval
   set: build time, distinct n-grams, bytes per n-gram, and the sample matched against it (lookups that miss the
   CPU caches); the plain loop's set of tuples measured with tracemalloc on the first million n-grams.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import time
import tracemalloc
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ray_jobs.config import InputConfig  # noqa: E402
from ray_jobs.steps.decontam.config import DecontamConfig  # noqa: E402
from ray_jobs.steps.decontam.index import load_index  # noqa: E402
from ray_jobs.steps.decontam.ops import DecontamStage, build_index  # noqa: E402

EVAL_DIR = REPO / "tests" / "data" / "decontam"
BOOKS = REPO.parent / "shared" / "data" / "gutenberg_subset_rcdm_uga" / "gutenberg_dickens_twain_shakespeare.tar.gz"
N = 13
_DELETE = {c: None for c in range(0x20000) if unicodedata.category(chr(c))[0] in "PS"}


def words(text: str) -> list[str]:
    return text.lower().translate(_DELETE).split()


def plain_index(texts: list[str]) -> set[tuple[str, ...]]:
    grams: set[tuple[str, ...]] = set()
    for t in texts:
        w = words(t)
        grams.update(tuple(w[i:i + N]) for i in range(len(w) - N + 1))
    return grams


def plain_match(texts: list[str], grams: set[tuple[str, ...]]) -> list[int]:
    out = []
    for t in texts:
        w = words(t or "")
        out.append(sum(tuple(w[i:i + N]) in grams for i in range(len(w) - N + 1)))
    return out


def timed(fn):
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-mb", type=float, default=40.0)
    args = ap.parse_args()

    sample = pq.read_table(REPO / "shards" / "sample" / "parquet", columns=["id", "text"])
    texts = sample["text"].to_pylist()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    cfg = DecontamConfig(eval_paths=(str(EVAL_DIR),), min_words=N)  # whole 13-grams only: what the loop does
    stage = DecontamStage(cfg, load_index(cfg, InputConfig()))
    stage.setup()
    evals = (EVAL_DIR / "gutenberg_passages.jsonl").read_text().splitlines()
    grams = plain_index([json.loads(e)["text"] for e in evals])
    ours_t, plain_t = [], []
    for _ in range(args.reps):
        out, w, c = timed(lambda: stage(sample))
        ours_t.append((w, c))
        hits, w, c = timed(lambda: plain_match(texts, grams))
        plain_t.append((w, c))
    assert out["decontam_ngrams"].to_pylist() == hits, "the stage and the plain loop disagree"
    ow, oc = np.median(ours_t, axis=0)
    pw, pc_ = np.median(plain_t, axis=0)
    print(f"sample: {len(texts)} rows, {mb:.2f} MB, {sum(h > 0 for h in hits)} rows with a match; medians of "
          f"{args.reps} interleaved reps")
    print(f"  DecontamStage   {ow:.3f} s wall {oc:.3f} s CPU  {len(texts) / oc:,.0f} rows/s per core  "
          f"{mb / oc:.1f} MB/s per core")
    print(f"  plain loop      {pw:.3f} s wall {pc_:.3f} s CPU  {len(texts) / pc_:,.0f} rows/s per core  "
          f"{mb / pc_:.1f} MB/s per core")
    print(f"  ratio (CPU)     {pc_ / oc:.1f}x")

    if not BOOKS.is_file():
        print(f"{BOOKS} not found: the large-index part needs ../shared/data")
        return
    items: list[str] = []
    size = 0
    with tarfile.open(BOOKS) as tar:
        for m in tar:
            if not m.isfile() or not m.name.endswith(".txt") or size > args.big_mb * 1e6:
                continue
            w = tar.extractfile(m).read().decode("utf-8", "replace").split()
            size += m.size
            items += [" ".join(w[i:i + 200]) for i in range(0, len(w), 200)]
    arr = pa.array(items, pa.string())
    index, bw, bc = timed(lambda: build_index(arr, pa.array([str(i) for i in range(len(items))]),
                                              np.zeros(len(items), np.int32), ["books"], N, N))
    per = index.nbytes / max(len(index.hashes), 1)
    print(f"large index: {size / 1e6:.1f} MB of books, {len(items):,} items of 200 words, "
          f"{len(index.hashes):,} distinct 13-grams built in {bw:.1f} s wall ({bc:.1f} s CPU); "
          f"{index.nbytes / 2**20:.1f} MiB = {per:.1f} bytes per n-gram = {per * 1e6 / 2**20:.1f} MiB per million")
    big = DecontamStage(cfg, index)
    big.setup()
    runs = [timed(lambda: big(sample)) for _ in range(args.reps)]
    out = runs[-1][0]
    bw, bc = np.median([(w, c) for _, w, c in runs], axis=0)
    print(f"  sample against it: {bc:.3f} s CPU, {len(texts) / bc:,.0f} rows/s per core, {mb / bc:.1f} MB/s per "
          f"core; {sum(h > 0 for h in out['decontam_ngrams'].to_pylist())} rows share a 13-gram with the books")
    tracemalloc.start()
    first = plain_index(items[: 1 + 10**6 // 188])  # 200-word items: 188 windows each, ~1 M n-grams
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"  plain loop's set of tuples: {used / len(first):.0f} bytes per n-gram ({len(first):,} n-grams, "
          f"{used / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
