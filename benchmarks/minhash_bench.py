"""MinHash signature throughput on one core: ray_jobs.steps.dedup.minhash.signatures against datasketch, rensa and
datatrove, on the same documents, in one run.

    python benchmarks/minhash_bench.py          # 20 MB Gutenberg slice + shards/sample: ~11 min on 2 busy cores
    python benchmarks/minhash_bench.py --mb 5 --loop-mb 0.1 --repeat 1 --json benchmarks/out/minhash_bench.json

Corpora. `gutenberg`: the books of ../shared/data/gutenberg_subset_rcdm_uga (Dickens, Twain, Shakespeare) cut at
blank lines into paragraph groups of about 4 kB, shuffled (seed 0), the first `--mb` MB kept. `sample`: the `text`
column of shards/sample/parquet. Without ../shared only `sample` is used. MB = UTF-8 bytes of the raw texts / 1e6.

Methods. Every method makes 128-value signatures of the 5-character shingles of
`re.sub(r"\\s+", " ", text.lower()).strip()` (ours: lower-casing in Arrow, whitespace folded in its kernel),
starting from the raw texts: normalising and shingling are timed, except in the "rensa only" rows, where the
shingle lists are built beforehand. Inputs are prepared untimed: a pyarrow string array for ours (the pipeline's
batches are Arrow), Python str for the others.

* ours: `signatures(pa_array, MinHashConfig())` (numba window hashing from the Arrow buffers, then rensa's
  `digest_matrix_from_flat_token_hashes`; warmed up on 8 documents first: the first call,
  which loads the on-disk numba cache, and a first call in a fresh process with an empty cache are reported apart).
* datasketch: the classic per-shingle `MinHash.update` loop (on the first `--loop-mb` MB only: it is slow),
  `MinHash.update_batch` per document, `MinHash.bulk`. Default scheme (affine32, sha1 hash).
* rensa: `RMinHash` per document (`update` with the shingle list), `RMinHash.digest_matrix_from_token_sets`,
  `CMinHash` per document, and `RMinHash.digest_matrix_from_token_sets_rho` (rensa's Rho sketch: one bucket per
  token plus densification, not classic MinHash); each with and without the Python shingling.
* datatrove: `MinhashDedupSignature.run(docs, rank=0, world_size=1)` (computes the signatures and writes and sorts
  its per-bucket signature files in a temporary folder), in a child process with the separate datatrove venv
  (`--datatrove-python`, default /work/bench-venv-datatrove/bin/python). Once with its defaults (5-word shingles
  from its spaCy word tokenizer after `simplify_text`, 14 buckets x 8 = 112 hashes, xxhash64) and once with a
  subclass whose `get_shingles` makes our 5-character shingles, 16 x 8 = 128 hashes (datatrove's config has no
  character-shingle option). Its signature computation alone (`get_shingles` + `get_signature`, no files) is
  printed below each table.

Every measurement runs in this process (or its child) pinned to CPU 0 with one thread per library; the run with
the fewest CPU seconds of `--repeat` counts (the per-shingle loop runs once, and no method runs again once it has
used 10 s). Per core = per CPU second of the process (user + system, `time.process_time`): the machine is shared,
and while other processes run on CPU 0 the wall time grows but the CPU time does not; both are printed.
MB/s per core = MB / CPU seconds, signatures/s likewise; "ours / this" = ours' MB/s on the same corpus / that row's.
Targets: >= 150x the per-shingle loop, >= 1x rensa.

Agreement: 200 Gutenberg documents (or sample documents) and a copy of each with 5 % of its words replaced by
other words of the set: the mean |estimated Jaccard - exact Jaccard of the shingle sets| of each method must stay
within the mean MinHash standard error sqrt(J(1-J)/128).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"  # one thread per library: before numpy, numba and rensa are loaded

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GUTENBERG = REPO.parent / "shared" / "data" / "gutenberg_subset_rcdm_uga" / "gutenberg_dickens_twain_shakespeare.tar.gz"
SAMPLE = REPO / "shards" / "sample" / "parquet"
DATATROVE_PYTHON = "/work/bench-venv-datatrove/bin/python"
NGRAM, NUM_PERM, SEED = 5, 128, 1
DOC_BYTES = 4000
REPEAT_BUDGET_S = 10.0  # a method slower than this is not run again: its best-of matters little
LOOP_TARGET, RENSA_TARGET = 150.0, 1.0
# A first call with an empty numba cache: compiles the kernel (run in a fresh interpreter).
COLD_COMPILE = """
import time, pyarrow as pa
t0 = time.perf_counter()
from ray_jobs.steps.dedup.minhash import MinHashConfig, signatures
t1 = time.perf_counter()
signatures(pa.array(["it was the best of times, it was the worst of times"] * 8), MinHashConfig())
print(t1 - t0, time.perf_counter() - t1)
"""


# ------------------------------------------------------------------------------------------------ text


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def shingles(text: str) -> list[str]:
    """5-character shingles of the normalised text; a shorter text is one shingle, an empty one none."""
    t = normalise(text)
    return [t[i:i + NGRAM] for i in range(max(len(t) - NGRAM + 1, 1))] if t else []


def gutenberg_docs(mb: float) -> list[str]:
    """Books cut at blank lines into paragraph groups of about DOC_BYTES, shuffled, the first `mb` MB."""
    from make_dedup_corpus import book_texts  # the same reading of the archive (run from benchmarks/)

    docs = []
    for _, _, text in book_texts(GUTENBERG):
        buf, size = [], 0
        for para in re.split(r"\n[ \t]*\n", text):
            if para.strip():
                buf.append(para.strip("\n"))
                size += len(para.encode()) + 2
            if size >= DOC_BYTES:
                docs.append("\n\n".join(buf))
                buf, size = [], 0
        if size >= DOC_BYTES // 4:
            docs.append("\n\n".join(buf))
    random.Random(0).shuffle(docs)
    return prefix(docs, mb)


def sample_docs() -> list[str]:
    import pyarrow.parquet as pq

    return [t for t in pq.read_table(SAMPLE, columns=["text"]).column("text").to_pylist() if t]


def prefix(docs: list[str], mb: float) -> list[str]:
    """The first documents of `docs` up to `mb` MB (at least one)."""
    out, size = [], 0
    for doc in docs:
        if out and size >= mb * 1e6:
            break
        out.append(doc)
        size += len(doc.encode())
    return out


def megabytes(docs: list[str]) -> float:
    return sum(len(d.encode()) for d in docs) / 1e6


def perturbed(doc: str, vocabulary: list[str], rng: random.Random) -> str:
    """The document's words with 5 % of them replaced by words drawn from `vocabulary`."""
    words = doc.split()
    for i in rng.sample(range(len(words)), max(1, len(words) // 20)):
        words[i] = rng.choice(vocabulary)
    return " ".join(words)


# ------------------------------------------------------------------------------------------------ methods
# Each method: (name, prepare(texts) -> input, built untimed; run(input) -> signatures, timed).


def methods() -> list[tuple[str, object, object]]:
    import pyarrow as pa
    from datasketch import MinHash
    from rensa import CMinHash, RMinHash

    from ray_jobs.steps.dedup.minhash import MinHashConfig, signatures

    cfg = MinHashConfig()
    assert (cfg.shingle, cfg.ngram, cfg.num_perm) == ("char", NGRAM, NUM_PERM)

    def texts(docs):
        return docs

    def shingle_lists(docs):
        return [shingles(d) for d in docs]

    def ours(arr):
        return signatures(arr, cfg)[0]

    def datasketch_loop(docs):
        out = []
        for d in docs:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
            for sh in shingles(d):
                m.update(sh.encode("utf8"))
            out.append(m.digest())
        return out

    def datasketch_batch(docs):
        out = []
        for d in docs:
            m = MinHash(num_perm=NUM_PERM, seed=SEED)
            m.update_batch([sh.encode("utf8") for sh in shingles(d)])
            out.append(m.digest())
        return out

    def datasketch_bulk(docs):
        batch = [[sh.encode("utf8") for sh in shingles(d)] for d in docs]
        return [m.digest() for m in MinHash.bulk(batch, num_perm=NUM_PERM, seed=SEED)]

    def per_doc(cls):
        def run(lists):
            out = []
            for sh in lists:
                m = cls(NUM_PERM, SEED)
                m.update(sh)
                out.append(m.digest())
            return out
        return run

    def rensa_matrix(lists):
        return RMinHash.digest_matrix_from_token_sets(lists, NUM_PERM, SEED).to_rows()

    def rensa_rho(lists):
        return RMinHash.digest_matrix_from_token_sets_rho(lists, NUM_PERM, SEED).to_rows()

    def with_shingling(run):
        return lambda docs: run(shingle_lists(docs))

    rensa = [
        ("rensa RMinHash per doc", per_doc(RMinHash)),
        ("rensa RMinHash.digest_matrix_from_token_sets", rensa_matrix),
        ("rensa CMinHash per doc", per_doc(CMinHash)),
        ("rensa RMinHash Rho sketch (not classic MinHash)", rensa_rho),
    ]
    return [
        ("ours: signatures (numba windows + rensa permutations)", lambda docs: pa.array(docs, pa.string()), ours),
        ("datasketch MinHash.update per shingle (loop)", texts, datasketch_loop),
        ("datasketch MinHash.update_batch per doc", texts, datasketch_batch),
        ("datasketch MinHash.bulk", texts, datasketch_bulk),
        *[(name, texts, with_shingling(run)) for name, run in rensa],
        *[(f"{name}, rensa only", shingle_lists, run) for name, run in rensa],
    ]


def timed(run, arg, repeat: int) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds, result) of the run with the fewest CPU seconds of `repeat` runs (fewer once
    REPEAT_BUDGET_S of wall time is spent)."""
    best, spent = None, 0.0
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        result = run(arg)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        if best is None or cpu < best[1]:
            best = (wall, cpu, result)
        spent += wall
        if spent >= REPEAT_BUDGET_S:
            break
    return best


def row(name: str, docs: int, mb: float, wall: float, cpu: float) -> dict:
    return {"method": name, "docs": docs, "mb": mb, "seconds": wall, "cpu_seconds": cpu, "mb_per_s": mb / cpu,
            "sigs_per_s": docs / cpu}


# ------------------------------------------------------------------------------------------------ datatrove


def datatrove_worker(in_path: str, out_path: str) -> None:
    """Child process, datatrove venv: time MinhashDedupSignature on each corpus of `in_path` (JSON)."""
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.logging import logger

    logger.remove()  # its progress logs would go to our stderr

    class CharShingleSignature(MinhashDedupSignature):
        def get_shingles(self, text: str) -> np.ndarray:
            return np.fromiter((self._hash_func(s) for s in shingles(text)), dtype=np.uint64).reshape((-1, 1))

    variants = [
        ("datatrove MinhashDedupSignature, defaults (5-word shingles, 112 hashes)", MinhashDedupSignature,
         MinhashConfig()),
        ("datatrove MinhashDedupSignature, 5-char shingles, 128 hashes", CharShingleSignature,
         MinhashConfig(num_buckets=NUM_PERM // 8, hashes_per_bucket=8)),
    ]
    job = json.loads(Path(in_path).read_text())
    results = {}
    for corpus, texts in job["corpora"].items():
        docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
        mb = megabytes(texts)
        rows = []
        for name, cls, config in variants:
            with tempfile.TemporaryDirectory() as tmp:
                step = cls(output_folder=tmp, config=config)
                step.get_shingles(docs[0].text)  # loads the spaCy tokenizer

                def compute(docs, step=step):
                    for d in docs:
                        sh = step.get_shingles(d.text)
                        if sh.size:
                            step.get_signature(sh)

                def run_step(docs, step=step):
                    step.run(iter(docs), rank=0, world_size=1)

                wall, cpu, _ = timed(run_step, docs, job["repeat"])
                rows.append(row(name, len(docs), mb, wall, cpu))
                wall, cpu, _ = timed(compute, docs, job["repeat"])
                rows[-1]["compute_only"] = row(name + ", signature computation only", len(docs), mb, wall, cpu)
        results[corpus] = rows
    results["versions"] = {p: version(p) for p in ("datatrove", "numpy", "spacy", "xxhash")}
    Path(out_path).write_text(json.dumps(results))


def run_datatrove(python: str, corpora: dict[str, list[str]], repeat: int, timeout: float) -> dict:
    """Datatrove rows per corpus, or {"error": why}."""
    if not Path(python).exists():
        return {"error": f"{python} not found (create the venv: see the module docstring)"}
    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"corpora": corpora, "repeat": repeat}))
        try:
            proc = subprocess.run([python, __file__, "--datatrove-worker", str(job), str(out)], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"datatrove child ran past {timeout:.0f} s (killed)"}
        if proc.returncode != 0:
            return {"error": f"datatrove child exited {proc.returncode}: {proc.stderr.strip()[-600:]}"}
        return json.loads(out.read_text())


# ------------------------------------------------------------------------------------------------ checks


def as_matrix(sigs) -> np.ndarray:
    return sigs if isinstance(sigs, np.ndarray) else np.array(sigs)


def agreement(all_methods, docs: list[str], pairs: int = 200) -> list[dict]:
    """Mean |estimate - exact Jaccard| of each method over `pairs` (document, 5 %-perturbed copy) pairs."""
    rng = random.Random(1)
    originals = docs[:pairs]
    vocabulary = sorted({w for d in originals for w in d.split()})
    copies = [perturbed(d, vocabulary, rng) for d in originals]
    exact = np.array([len(a & b) / len(a | b) for a, b in
                      ((set(shingles(x)), set(shingles(y))) for x, y in zip(originals, copies))])
    se = np.sqrt(exact * (1 - exact) / NUM_PERM)
    out = []
    for name, prepare, run in all_methods:
        if "loop" in name or "rensa only" in name:  # same signatures as update_batch / the rows with shingling
            continue
        sig = as_matrix(run(prepare(originals + copies)))
        estimate = (sig[:len(originals)] == sig[len(originals):]).mean(axis=1)
        diff = estimate - exact
        out.append({"method": name, "pairs": len(originals), "mean_exact_jaccard": float(exact.mean()),
                    "mean_abs_diff": float(np.abs(diff).mean()), "mean_diff": float(diff.mean()),
                    "mean_standard_error": float(se.mean()), "within": bool(np.abs(diff).mean() <= se.mean())})
    return out


def cold_start(sample: list[str]) -> dict:
    """First call in this process (numba cache as found on disk), then a fresh process with an empty cache."""
    import pyarrow as pa

    cache = REPO / "ray_jobs" / "dedup" / "__pycache__"
    cached = any(cache.glob("minhash._window_hashes-*.nbi"))
    t0 = time.perf_counter()
    from ray_jobs.steps.dedup.minhash import MinHashConfig, signatures
    t1 = time.perf_counter()
    signatures(pa.array(sample, pa.string()), MinHashConfig())
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": tmp, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", COLD_COMPILE], capture_output=True, text=True, env=env,
                              timeout=300, check=True)
    import_s, compile_s = map(float, proc.stdout.split())
    return {"numba_cache_on_disk": cached, "import_s": t1 - t0, "first_call_s": t2 - t1,
            "empty_cache_import_s": import_s, "empty_cache_first_call_s": compile_s}


# ------------------------------------------------------------------------------------------------ report


def table(rows: list[dict], ours_rate: float) -> str:
    lines = ["| method | docs | MB | wall s | CPU s | MB/s per core | signatures/s per core | ours / this |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['docs']:,} | {r['mb']:.2f} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
                     f"| {r['mb_per_s']:.2f} | {r['sigs_per_s']:,.0f} | {ours_rate / r['mb_per_s']:.1f}x |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    ours = rows[0]["mb_per_s"]
    loop = next(r for r in rows if "loop" in r["method"])
    rensa_full = max((r for r in rows if r["method"].startswith("rensa") and "only" not in r["method"]
                      and "Rho" not in r["method"]), key=lambda r: r["mb_per_s"])
    rensa_only = max((r for r in rows if r["method"].startswith("rensa") and "only" in r["method"]
                      and "Rho" not in r["method"]), key=lambda r: r["mb_per_s"])
    out = [f"- ours / per-shingle loop: {ours / loop['mb_per_s']:.0f}x (target >= {LOOP_TARGET:.0f}x)"]
    for label, r in (("fastest rensa MinHash incl. shingling", rensa_full), ("fastest rensa MinHash, rensa only",
                                                                             rensa_only)):
        out.append(f"- ours / {label} ({r['method']}): {ours / r['mb_per_s']:.2f}x (target >= {RENSA_TARGET:.0f}x)")
    return out


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20.0, help="size of the Gutenberg slice (MB)")
    parser.add_argument("--loop-mb", type=float, default=0.3, help="slice for the per-shingle datasketch loop (MB)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per method")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    parser.add_argument("--datatrove-python", default=DATATROVE_PYTHON)
    parser.add_argument("--datatrove-timeout", type=float, default=600.0)
    parser.add_argument("--datatrove-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    if args.datatrove_worker:
        datatrove_worker(*args.datatrove_worker)
        return
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()

    corpora = {"sample": sample_docs()}
    if GUTENBERG.exists():
        corpora = {"gutenberg": gutenberg_docs(args.mb), **corpora}
    else:
        print(f"{GUTENBERG} not found: shards/sample only", file=sys.stderr)
    first = next(iter(corpora.values()))
    cold = cold_start(first[:8])
    all_methods = methods()

    report = {"machine": cpu_model(), "cpus_used": sorted(os.sched_getaffinity(0)), "args": {
        "mb": args.mb, "loop_mb": args.loop_mb, "repeat": args.repeat}, "cold_start": cold, "corpora": {}}
    report["versions"] = {"python": sys.version.split()[0],
                          **{p: version(p) for p in ("numpy", "numba", "pyarrow", "datasketch", "rensa")}}
    for corpus, docs in corpora.items():
        rows = []
        for name, prepare, run in all_methods:
            subset = prefix(docs, args.loop_mb) if "loop" in name else docs
            wall, cpu, _ = timed(run, prepare(subset), 1 if "loop" in name else args.repeat)
            rows.append(row(name, len(subset), megabytes(subset), wall, cpu))
            print(f"[{time.perf_counter() - started:6.0f} s] {corpus}: {name}: {rows[-1]['mb_per_s']:.2f} MB/s",
                  file=sys.stderr, flush=True)
        report["corpora"][corpus] = {"docs": len(docs), "mb": megabytes(docs), "rows": rows}

    datatrove = run_datatrove(args.datatrove_python, corpora, args.repeat, args.datatrove_timeout)
    report["datatrove"] = datatrove
    if "error" in datatrove:
        report["versions"]["datatrove"] = None
    else:
        report["versions"]["datatrove"] = datatrove["versions"]["datatrove"]
        report["versions"]["datatrove_venv"] = datatrove["versions"]
        for corpus in corpora:
            report["corpora"][corpus]["rows"] += datatrove[corpus]
    report["agreement"] = agreement(all_methods, first)
    report["seconds_total"] = time.perf_counter() - started

    print(f"# MinHash signatures, 5-char shingles, {NUM_PERM} permutations, one core ({report['machine']})\n")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "datatrove_venv"))
    print(f"Ours, cold: import {cold['import_s']:.2f} s, first call {cold['first_call_s']:.2f} s (numba cache on disk: "
          f"{cold['numba_cache_on_disk']}); empty cache, fresh process: import {cold['empty_cache_import_s']:.2f} s, "
          f"first call (compile) {cold['empty_cache_first_call_s']:.2f} s")
    if "error" in datatrove:
        print(f"datatrove: not measured: {datatrove['error']}")
    for corpus, result in report["corpora"].items():
        rows = result["rows"]
        print(f"\n## {corpus}: {result['docs']:,} docs, {result['mb']:.2f} MB (per-shingle loop: first "
              f"{args.loop_mb} MB), best of {args.repeat}\n")
        print(table(rows, rows[0]["mb_per_s"]))
        print()
        print("\n".join(verdicts(rows)))
        for r in rows:
            if "compute_only" in r:
                c = r["compute_only"]
                print(f"- {c['method']}: {c['cpu_seconds']:.2f} CPU s, {c['mb_per_s']:.2f} MB/s "
                      f"(ours / this {rows[0]['mb_per_s'] / c['mb_per_s']:.1f}x)")
    print(f"\n## Agreement: document vs copy with 5 % of words replaced ({next(iter(corpora))})\n")
    print("| method | pairs | mean exact J | mean abs(est - J) | mean est - J | mean SE sqrt(J(1-J)/128) | within |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for a in report["agreement"]:
        print(f"| {a['method']} | {a['pairs']} | {a['mean_exact_jaccard']:.3f} | {a['mean_abs_diff']:.4f} "
              f"| {a['mean_diff']:+.4f} | {a['mean_standard_error']:.4f} | {'yes' if a['within'] else 'NO'} |")
    print(f"\nTotal {report['seconds_total']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
