"""Removal quality of near-duplicate methods on a corpus from benchmarks/make_dedup_corpus.py, at Jaccard 0.85.

    python benchmarks/make_dedup_corpus.py --out /tmp/dedupq/corpus --size-mb 20 --truth /tmp/dedupq/truth.parquet
    python benchmarks/dedup_quality.py --corpus /tmp/dedupq/corpus --truth /tmp/dedupq/truth.parquet
    python benchmarks/dedup_quality.py --corpus ... --truth ... --methods classic --json /tmp/dedupq/classic.json
    python benchmarks/dedup_quality.py --corpus ... --truth ... --methods ours --ours-set dedup.near.verify=signature

Truth. The graph whose edges are the truth pairs with exact Jaccard >= --threshold (5-character shingles of the
normalised text; pairs across families are taken as dissimilar, which make_dedup_corpus.py checks on a sample).
A connected component of s documents needs s-1 removals, any s-1 of them. A removed document is a true positive if
its component has s >= 2 documents, at most s-1 per component: TP = sum over components of min(removed in it, s-1).
precision = TP / removed, recall = TP / sum(s-1). Pair level (ours: its `_clusters`): pair recall = truth pairs
(Jaccard >= --threshold) whose two documents share a cluster / truth pairs; pair precision = pairs of documents
that share a cluster and lie in one truth component / pairs that share a cluster. chain recall is the recall over the components that hold a
`chain` document (copies of copies: only a transitive method finds all of them); chain removed counts removed
`chain` documents.

Methods (--methods, comma-separated; the documents in corpus order = shard files by name, rows in file order):
  classic  the sequential datasketch recipe: MinHashLSH(threshold=0.85, num_perm=128); for each document the
           MinHash of its 5-character shingles (update_batch; the permutations are made once and shared, as
           MinHash(permutations=...) allows), lsh.query: any hit -> removed, else lsh.insert. One process;
           seconds and MB/s cover shingling, hashing and the index.
  ours     `ray-jobs dedup --input <corpus> --output <run> --set ray.num_cpus=2 [--set <--ours-set>...]`
           as a subprocess (exact and near dedup in one graph); removed = every id not under <run>/dedup/status=kept/.
           <run>/dedup/_clusters (id, cluster_id, kept) is checked against the status folders. Seconds are the
           wall time of the whole command, Ray start-up included.
  datatrove  datatrove's standard MinHash deduplication (datatrove.pipeline.dedup.minhash), in a child process
           with the datatrove venv (--datatrove-python; the code it runs: benchmarks/_datatrove_child.py), each
           stage one LocalPipelineExecutor run, 2 workers: ParquetReader(text_key="text", id_key="id",
           read_metadata=False) ->
           MinhashDedupSignature (2 tasks) -> MinhashDedupBuckets (num_buckets = 14 tasks: datatrove needs a
           multiple of num_buckets) -> MinhashDedupCluster (1 task: datatrove needs 1) -> ParquetReader ->
           MinhashDedupFilter (exclusion_writer=ParquetWriter) -> ParquetWriter (2 tasks). All datatrove defaults:
           MinhashConfig() = 5-gram shingles of its word tokenizer (spaCy English) after simplify_text (lower case,
           no punctuation, numbers normalised), 14 buckets x 8 hashes = 112 hashes (LSH threshold ~ (1/14)^(1/8)
           = 0.72 on the Jaccard of word 5-grams, not of --threshold), 64-bit xxhash, seed 1; no exact-dedup step.
           --datatrove-char swaps in 5-character shingles of the truth's normalised text (CharShingleSignature, a
           subclass overriding get_shingles, as minhash_bench.py does), everything else the same. A task reads whole
           shard files, so a corpus of one shard keeps one of the 2 tasks idle in the signature and filter stages.
           removed = every corpus id not in the filter stage's output; the ids behind the cluster stage's .remove
           files (mapped through each task's reading order) and the filter's exclusion output are checked against
           it. Seconds are the wall time of the four stages together (per stage in the JSON and below the table;
           the child's start-up, imports and spaCy, is left out but recorded).

Every subprocess method (ours, datatrove) runs in its own session; its process tree is sampled every 0.1 s (peak
RSS = the largest sum of RSS over the tree, shared pages counted once per process) and anything of it still
alive when it ends is killed by pid (counted in the JSON as leftover_processes).

Prints a Markdown table (method, removed, precision, recall, chain recall, chain removed, seconds, MB/s, MB/s per
core, peak RSS) and writes everything measured, with the removals by document kind, to --json. MB/s per core =
MB / seconds / cores used (classic 1, ours and datatrove 2). For the subprocess methods, CPU s = the user + system
CPU seconds of every process of the tree (each process's last 0.1 s sample; start-up included), and MB per CPU s
the figure a busy shared machine cannot inflate; others' CPU s is what the rest of the machine used meanwhile
(busy CPU time of the whole machine, less the tree's and this harness's), to tell a quiet run from a loaded one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHINGLE = 5
BENCH = Path(__file__).resolve().parent
DATATROVE_PYTHON = "/work/bench-venv-datatrove/bin/python"
CORES = {"classic": 1, "ours": 2, "datatrove": 2}


def shingles(text: str) -> set[str]:
    t = re.sub(r"\s+", " ", text.lower()).strip()
    return {t[i:i + SHINGLE] for i in range(len(t) - SHINGLE + 1)} or {t}


def read_corpus(corpus: Path) -> pa.Table:
    files = sorted(corpus.glob("*.parquet"))
    if not files:
        raise SystemExit(f"no .parquet files in {corpus}")
    return pa.concat_tables(pq.read_table(f, columns=["id", "text", "kind"]) for f in files)


class Truth:
    """Connected components of the pairs at or above the threshold, over every document of the corpus."""

    def __init__(self, ids: list[str], kinds: list[str], truth: Path, threshold: float) -> None:
        self.index = {d: i for i, d in enumerate(ids)}
        self.kinds = kinds
        pairs = pq.read_table(truth, columns=["id_a", "id_b", "jaccard"]).to_pydict()
        unknown = {d for d in pairs["id_a"] + pairs["id_b"] if d not in self.index}
        if unknown:
            raise SystemExit(f"{len(unknown)} ids of {truth} are not in the corpus (e.g. {sorted(unknown)[0]!r})")
        parent = list(range(len(ids)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        self.pairs = [(self.index[a], self.index[b]) for a, b, j in zip(pairs["id_a"], pairs["id_b"], pairs["jaccard"])
                      if j >= threshold]
        for a, b, j in zip(pairs["id_a"], pairs["id_b"], pairs["jaccard"]):
            if j >= threshold:
                ra, rb = root(self.index[a]), root(self.index[b])
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
        self.comp = [root(i) for i in range(len(ids))]
        self.size = Counter(self.comp)
        self.chain_comps = {c for c, k in zip(self.comp, kinds) if k == "chain" and self.size[c] > 1}
        self.needed = sum(s - 1 for s in self.size.values())
        self.chain_needed = sum(self.size[c] - 1 for c in self.chain_comps)

    def summary(self) -> dict:
        return {"documents": len(self.comp), "components_ge_2": sum(s > 1 for s in self.size.values()),
                "largest_component": max(self.size.values()), "removals_needed": self.needed,
                "chain_components": len(self.chain_comps), "chain_removals_needed": self.chain_needed}

    def score(self, removed: set[str]) -> dict:
        unknown = removed - self.index.keys()
        docs = [self.index[d] for d in removed - unknown]
        per_comp = Counter(self.comp[i] for i in docs)
        tp = {c: min(n, self.size[c] - 1) for c, n in per_comp.items()}
        total, chain_tp = sum(tp.values()), sum(tp.get(c, 0) for c in self.chain_comps)
        return {
            "removed": len(removed), "true_positives": total,
            "precision": total / len(removed) if removed else None,
            "recall": total / self.needed if self.needed else None,
            "chain_recall": chain_tp / self.chain_needed if self.chain_needed else None,
            "chain_removed": sum(self.kinds[i] == "chain" for i in docs),
            "removed_by_kind": dict(Counter(self.kinds[i] for i in docs)),
            "removed_singletons": sum(self.size[self.comp[i]] == 1 for i in docs),
            "unknown_ids": len(unknown),
        }


    def score_pairs(self, cluster_of: dict[str, str]) -> dict:
        """Pair precision and recall of a clustering (id -> cluster id; ids missing are alone)."""
        cluster = [cluster_of.get(d, d) for d in self.index]
        found = sum(cluster[a] == cluster[b] for a, b in self.pairs)
        members: dict[str, list[int]] = {}
        for i, c in enumerate(cluster):
            members.setdefault(c, []).append(i)
        predicted = right = 0
        for docs in members.values():
            predicted += len(docs) * (len(docs) - 1) // 2
            right += sum(n * (n - 1) // 2 for n in Counter(self.comp[i] for i in docs).values())
        return {"pair_precision": right / predicted if predicted else None,
                "pair_recall": found / len(self.pairs) if self.pairs else None, "pairs_predicted": predicted}


def run_classic(table: pa.Table, threshold: float, num_perm: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    template = MinHash(num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    removed = set()
    t0 = time.perf_counter()
    for doc_id, text in zip(table.column("id").to_pylist(), table.column("text").to_pylist()):
        m = MinHash(num_perm=num_perm, permutations=template.permutations, scheme=template.scheme)
        m.update_batch([s.encode("utf-8") for s in shingles(text)])
        if lsh.query(m):
            removed.add(doc_id)
        else:
            lsh.insert(doc_id, m)
    return {"removed_ids": removed, "seconds": time.perf_counter() - t0}


def run_tree(cmd: list[str], log: Path, timeout: float) -> dict:
    """Run `cmd` in its own session, output to `log`, sampling the RSS of its process tree every 0.1 s; on timeout
    the session is killed and TimeoutExpired raised. Whatever of the tree outlives the command is killed by pid."""
    import psutil
    from pipeline_bench import busy_cpu_s  # here, not at the top: _datatrove_child imports this file without psutil

    seen: dict[int, float] = {}  # pid -> create_time of every process seen in the tree
    cpu: dict[int, float] = {}  # pid -> its user + system CPU seconds at the last sample
    peak = {"tree": 0, "process": 0}
    done = threading.Event()

    def sample(root: psutil.Process) -> None:
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            rss = []
            for p in procs:
                try:
                    rss.append(p.memory_info().rss)
                    seen.setdefault(p.pid, p.create_time())
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            peak["tree"], peak["process"] = max(peak["tree"], sum(rss)), max([peak["process"], *rss])
            done.wait(0.1)

    busy0, load0, own0, t0 = busy_cpu_s(), os.getloadavg()[0], time.process_time(), time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = threading.Thread(target=sample, args=(psutil.Process(proc.pid),), daemon=True)
        sampler.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and what it started
            proc.wait()
            raise
        finally:
            seconds = time.perf_counter() - t0
            done.set()
            sampler.join()
            leftover = 0
            for pid, created in seen.items():
                try:
                    p = psutil.Process(pid)
                    if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                        p.kill()
                        leftover += 1
                except psutil.Error:
                    pass
    if returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise RuntimeError(f"exit {returncode}: {lines[-1] if lines else ''}\n{' '.join(cmd)}\n"
                           + "\n".join(lines[-40:]))
    # what the rest of the machine used meanwhile: a shared machine's load inflates wall time, and CPU s less so
    others = busy_cpu_s() - busy0 - sum(cpu.values()) - (time.process_time() - own0)
    return {"seconds": seconds, "cpu_seconds": sum(cpu.values()), "peak_rss_mb": peak["tree"] / 1e6,
            "peak_rss_one_process_mb": peak["process"] / 1e6, "processes_seen": len(seen),
            "leftover_processes": leftover, "others_cpu_seconds": round(max(others, 0.0), 1),
            "load_before": load0, "load_after": os.getloadavg()[0]}


def run_ours(corpus: Path, work: Path, overrides: list[str], timeout: float) -> dict:
    exe = Path(sys.executable).with_name("ray-jobs")
    run_dir = work / "run"
    if run_dir.exists():
        raise RuntimeError(f"{run_dir} exists: ray-jobs would skip the finished stage; give a fresh --work")
    cmd = [str(exe) if exe.exists() else "ray-jobs", "dedup", "--input", str(corpus),
           "--output", str(run_dir), "--set", "ray.num_cpus=2"]
    for kv in overrides:
        cmd += ["--set", kv]
    tree = run_tree(cmd, work / "ray_jobs.log", timeout)
    dedup = run_dir / "dedup"
    status_ids = {p.name.removeprefix("status="): set(pq.read_table(p, columns=["id"]).column("id").to_pylist())
                  for p in sorted(dedup.glob("status=*"))}
    clusters = pq.read_table(dedup / "_clusters", columns=["id", "cluster_id", "kept"]).to_pydict()
    cluster_sizes = Counter(clusters["cluster_id"])
    return {"status_ids": status_ids, **tree, "command": " ".join(cmd),
            "rows_by_status": {s: len(v) for s, v in status_ids.items()},
            "clusters": {"rows": len(clusters["id"]), "clusters_ge_2": sum(n > 1 for n in cluster_sizes.values()),
                         "largest": max(cluster_sizes.values(), default=0)},
            "not_kept_in_clusters": {d for d, k in zip(clusters["id"], clusters["kept"]) if not k},
            "cluster_of": dict(zip(clusters["id"], clusters["cluster_id"]))}


def run_datatrove(python: str, corpus: Path, work: Path, char: bool, timeout: float) -> dict:
    """datatrove's 4 stages in a child (benchmarks/_datatrove_child.py), 2 tasks / 2 workers."""
    if not Path(python).exists():
        raise RuntimeError(f"{python} not found: give --datatrove-python")
    dt_work = work / "datatrove"
    if dt_work.exists():
        raise RuntimeError(f"{dt_work} exists: datatrove would skip its finished tasks; give a fresh --work")
    dt_work.mkdir(parents=True)
    job, out = work / "datatrove_job.json", work / "datatrove_out.json"
    job.write_text(json.dumps({"corpus": str(corpus.resolve()), "work": str(dt_work), "char": char,
                               "tasks": 2, "workers": 2}))
    cmd = [python, str(BENCH / "_datatrove_child.py"), str(job), str(out)]
    tree = run_tree(cmd, work / "datatrove.log", timeout)
    result = json.loads(out.read_text())
    result["child_seconds"] = tree.pop("seconds")  # the whole child: imports and spaCy included
    return {**result, **tree, "command": " ".join(cmd)}


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown(results: list[dict]) -> str:
    lines = ["| method | removed | precision | recall | pair precision | pair recall | chain recall | chain removed "
             "| seconds | MB/s | MB/s per core | CPU s | MB per CPU s | peak RSS MB | others' CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error'].splitlines()[0][:80]} |" + " |" * 14)
            continue
        lines.append(f"| {r['method']} | {r['removed']:,} | {fmt(r['precision'], '.4f')} | {fmt(r['recall'], '.4f')} "
                     f"| {fmt(r.get('pair_precision'), '.4f')} | {fmt(r.get('pair_recall'), '.4f')} "
                     f"| {fmt(r['chain_recall'], '.4f')} | {r['chain_removed']:,} | {r['seconds']:.1f} "
                     f"| {r['mb_per_s']:.2f} | {r['mb_per_s_per_core']:.2f} | {fmt(r.get('cpu_seconds'), '.0f')} "
                     f"| {fmt(r.get('mb_per_cpu_s'), '.2f')} | {fmt(r.get('peak_rss_mb'), ',.0f')} "
                     f"| {fmt(r.get('others_cpu_seconds'), '.0f')} |")
    for r in results:
        if "stage_seconds" in r:
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in r["stage_seconds"].items())
            lines.append(f"\n{r['method']}: {stages} (the whole child, start-up included: {r['child_seconds']:.1f} s; "
                         f"{r['docs_with_signature']:,} documents with a signature); removed = not in the filter "
                         f"output; cluster .remove ids differ in {r['cross_check']['cluster_remove_vs_removed']}, "
                         f"exclusion output in {r['cross_check']['exclusion_vs_removed']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, required=True, help="folder of Parquet shards (make_dedup_corpus.py)")
    ap.add_argument("--truth", type=Path, help="truth pairs (make_dedup_corpus.py --truth); without it only "
                    "removals, time and memory are reported (for corpora too large for the truth)")
    ap.add_argument("--methods", default="classic,ours", help="comma-separated: classic, ours, datatrove")
    ap.add_argument("--threshold", type=float, default=0.85, help="Jaccard threshold of the truth and of classic")
    ap.add_argument("--num-perm", type=int, default=128, help="permutations of the classic MinHash")
    ap.add_argument("--ours-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --set for ray-jobs (repeatable)")
    ap.add_argument("--ours-timeout", type=float, default=3600.0, help="seconds before ray-jobs is stopped")
    ap.add_argument("--datatrove-python", default=DATATROVE_PYTHON, help="python of a venv with datatrove, pyarrow")
    ap.add_argument("--datatrove-char", action="store_true",
                    help="datatrove with 5-character shingles instead of its 5-word ones")
    ap.add_argument("--datatrove-timeout", type=float, default=3600.0, help="seconds before datatrove is stopped")
    ap.add_argument("--work", type=Path,
                    help="folder for the ray-jobs and datatrove runs (default: a temporary one, removed after)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := set(methods) - set(CORES):
        ap.error(f"unknown methods {sorted(unknown)}; choose from {', '.join(CORES)}")

    table = read_corpus(args.corpus)
    ids, kinds = table.column("id").to_pylist(), table.column("kind").to_pylist()
    if len(set(ids)) != len(ids):
        raise SystemExit("the corpus has repeated ids")
    mb = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    truth = Truth(ids, kinds, args.truth, args.threshold) if args.truth else None
    summary = truth.summary() if truth else None
    print(f"corpus {args.corpus}: {len(ids):,} documents, {mb:.1f} MB; kinds {dict(Counter(kinds))}")
    if truth:
        print(f"truth at Jaccard >= {args.threshold}: {summary['components_ge_2']:,} components of >= 2 documents "
              f"(largest {summary['largest_component']}), {summary['removals_needed']:,} removals needed, "
              f"{summary['chain_removals_needed']:,} of them in {summary['chain_components']:,} chain components\n")

    results = []
    for method in methods:
        print(f"running {method} ...", flush=True)
        row: dict = {"method": {"ours": " ".join(["ours", *args.ours_set]),
                                "datatrove": "datatrove 5-char" if args.datatrove_char else "datatrove"}
                     .get(method, method)}
        try:
            if method == "classic":
                out = run_classic(table, args.threshold, args.num_perm)
                removed = out.pop("removed_ids")
            else:
                work = args.work or Path(tempfile.mkdtemp(prefix="dedup_quality_"))
                work.mkdir(parents=True, exist_ok=True)
                try:
                    if method == "ours":
                        out = run_ours(args.corpus, work, args.ours_set, args.ours_timeout)
                    else:
                        out = run_datatrove(args.datatrove_python, args.corpus, work, args.datatrove_char,
                                            args.datatrove_timeout)
                finally:
                    if args.work is None:
                        shutil.rmtree(work, ignore_errors=True)
            if method == "ours":
                status_ids = out.pop("status_ids")
                removed = set(ids) - status_ids.get("kept", set())
                out["ids_in_no_status"] = len(set(ids).difference(*status_ids.values()))
                out["clusters"]["not_kept_disagreeing_with_status"] = len(out.pop("not_kept_in_clusters") ^ removed)
                cluster_of = out.pop("cluster_of")
                if truth:
                    out.update(truth.score_pairs(cluster_of))
            elif method == "datatrove":
                kept = out.pop("kept_ids")
                removed = set(ids) - set(kept)
                out["cross_check"] = {
                    "kept_rows": len(kept), "kept_repeated": len(kept) - len(set(kept)),
                    "cluster_remove_vs_removed": len(set(out.pop("cluster_removed_ids")) ^ removed),
                    "exclusion_vs_removed": len(set(out.pop("excluded_ids")) ^ removed)}
            row.update(truth.score(removed) if truth else {
                "removed": len(removed), "precision": None, "recall": None, "chain_recall": None,
                "chain_removed": sum(k == "chain" for d, k in zip(ids, kinds) if d in removed)})
            row.update(out)
            row["mb_per_s"] = mb / row["seconds"]
            row["mb_per_s_per_core"] = row["mb_per_s"] / CORES[method]
            if row.get("cpu_seconds"):  # CPU seconds of the whole process tree: what a shared machine cannot inflate
                row["mb_per_cpu_s"] = mb / row["cpu_seconds"]
        except (RuntimeError, OSError, subprocess.TimeoutExpired, pa.ArrowException) as e:
            row["error"] = f"{type(e).__name__}: {e}"
            print(row["error"], file=sys.stderr)
        results.append(row)

    print()
    print(markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"corpus": str(args.corpus), "truth": str(args.truth), "mb": mb,
                                         "threshold": args.threshold, "truth_summary": summary,
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
