"""Label errors: our ranked suspects against human verdicts and known flips, side by side with cleanlab, and the
job's time and memory on a million rows.

    python benchmarks/labels_bench.py imdb                    # precision@k against the MTurk verdicts
    python benchmarks/labels_bench.py agnews --seeds 0 1 2    # 5 % of labels flipped: precision / recall
    python benchmarks/labels_bench.py agnews --reference      # + cleanlab's usual workflow (lbfgs LR, in memory)
    python benchmarks/labels_bench.py scale --rows 1000000    # bounded memory: time, peak RSS, spill

Every run of our job is `ray-jobs labels` (`run_pipeline(stages=("labels",))`) in a child process with a fresh
2-CPU local Ray; a sampler adds up the RSS of the child and every Ray process (dedup_bench.Sampler). cleanlab
runs in this process on the probabilities our job wrote (`pred_probs`), so "same probabilities" is literal.

IMDB (../shared/data/imdb_aclimdb): the test set's 25,000 reviews; human verdicts exist for the 670 even-id
reviews among the 1,310 that the confident-learning paper flagged (5 MTurk workers each; an error is confirmed
when >= 3 chose the other label). Only even-id suspects can be checked, so precision@k is over each method's
ranked suspects with an even id; a suspect the paper did not flag has no verdict and counts as not confirmed
(a lower bound; `verified@k` says how many of the k had a verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

import cleanlab
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_bench import run_child  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
OUT = HERE / "out" / "labels"
KS = (10, 25, 50, 100, 200, 400)

CHILD = r"""
import json, resource, sys, time, dataclasses
from ray_jobs.config import load_config
from ray_jobs.planner import run_pipeline
data, out, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = load_config(None, [f"output.dir={out}", "ray.progress_bars=false", *overrides])
t0 = time.perf_counter()
stats = run_pipeline(cfg, stages=("labels",), input_cfg=dataclasses.replace(cfg.input, paths=(data,)))
seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"seconds": seconds, "driver_peak_rss_mb": rss, "stats": stats["stages"]["labels"]}))
"""


def run_job(data: Path, out: Path, overrides: list[str], cpus: int = 2) -> dict:
    """Our labels job in a child process, into a fresh `out`; time, driver and all-process peak RSS, largest
    process, spill."""
    shutil.rmtree(out, ignore_errors=True)  # a finished stage would be skipped: always measure a full run
    res = run_child(CHILD, [str(data), str(out), json.dumps([f"ray.num_cpus={cpus}", *overrides])],
                    f"labels job on {data}")
    return {**res, "seconds": round(res["seconds"], 1), "driver_peak_rss_mb": round(res["driver_peak_rss_mb"])}


def job_rows(out: Path, columns: list[str]) -> pa.Table:
    return pads.dataset(str(out / "labels"), format="parquet", partitioning="hive").to_table(columns=columns)


def job_issues(out: Path) -> list[str]:
    t = pads.dataset(str(out / "labels" / "_issues"), format="parquet").to_table(columns=["id", "rank"])
    return t.sort_by("rank")["id"].to_pylist()


def cleanlab_ranked(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    idx = cleanlab.filter.find_label_issues(labels, probs, return_indices_ranked_by="self_confidence")
    return idx, time.perf_counter() - t0


def probs_of(rows: pa.Table, ids: list[str]) -> np.ndarray:
    """The job's pred_probs in the order of `ids`."""
    pos = pc.index_in(pa.array(ids), value_set=rows["id"]).to_numpy()
    flat = pc.list_flatten(rows["pred_probs"].take(pa.array(pos))).to_numpy()
    return flat.reshape(len(ids), -1).astype(np.float64)


# ------------------------------------------------------------------------------------------------ IMDB


def imdb_table(root: Path) -> tuple[pa.Table, np.ndarray]:
    le = root / "label_errors_cleanlab"
    order = json.loads((le / "dataset_indexing" / "imdb_test_set_index_to_filename.json").read_text())
    given = np.load(le / "original_test_labels" / "imdb_test_set_original_labels.npy").astype(np.int64)
    texts = {}
    with tarfile.open(root / "aclImdb_test.tar.gz") as tar:
        for m in tar:
            if m.isfile() and re.search(r"/test/(pos|neg)/\d+_\d+\.txt$", m.name):
                texts[m.name.split("aclImdb/test/")[1]] = tar.extractfile(m).read().decode()
    ids = [order[str(i)] if isinstance(order, dict) else order[i] for i in range(len(given))]
    return pa.table({"id": ids, "text": [texts[i] for i in ids], "label": given}), given


def precision_at_k(ranked_ids: list[str], verdict: dict[str, bool]) -> dict:
    """Over the even-id suspects (the half with verdicts), in rank order."""
    even = [i for i in ranked_ids if int(re.search(r"(\d+)_\d+\.txt$", i).group(1)) % 2 == 0]
    out = {"suspects": len(ranked_ids), "even_id_suspects": len(even)}
    for k in [k for k in KS if k < len(even)] + [len(even)]:
        top = even[:k]
        if not top:
            continue
        out[f"p@{k}"] = round(sum(verdict.get(i, False) for i in top) / len(top), 3)
        out[f"verified@{k}"] = sum(i in verdict for i in top)
    return out


def bench_imdb(args) -> dict:
    root = SHARED / "imdb_aclimdb"
    le = root / "label_errors_cleanlab"
    work = OUT / "imdb"
    work.mkdir(parents=True, exist_ok=True)
    table, given = imdb_table(root)
    pq.write_table(table, work / "imdb.parquet")
    ids = table["id"].to_pylist()
    mturk = json.loads((le / "mturk" / "imdb_mturk_dev_even_ids.json").read_text())
    verdict = {m["id"].removeprefix("test/") + ".txt": m["mturk"]["guessed"] >= 3 for m in mturk}
    pyx = np.clip(np.load(le / "cross_validated_predicted_probabilities" / "imdb_test_set_pyx.npy"), 0, 1)

    ours = run_job(work / "imdb.parquet", work / "run", args.overrides)
    ours_ranked = job_issues(work / "run")
    our_probs = probs_of(job_rows(work / "run", ["id", "pred_probs"]), ids)
    cl_same, cl_same_s = cleanlab_ranked(given, our_probs)
    cl_pyx, cl_pyx_s = cleanlab_ranked(given, pyx)
    results = {
        "ours (our OOF probabilities)": {**precision_at_k(ours_ranked, verdict), "seconds": ours["seconds"],
                                         "oof_accuracy": round(float((our_probs.argmax(1) == given).mean()), 3)},
        "cleanlab, same probabilities": {**precision_at_k([ids[i] for i in cl_same], verdict),
                                         "seconds": round(cl_same_s, 2)},
        "cleanlab, paper's pyx.npy": {**precision_at_k([ids[i] for i in cl_pyx], verdict),
                                      "seconds": round(cl_pyx_s, 2),
                                      "oof_accuracy": round(float((pyx.argmax(1) == given).mean()), 3)},
    }
    (work / "ids.json").write_text(json.dumps(ids))
    ext = run_job(work / "imdb.parquet", work / "run_pyx", [*args.overrides, f"labels.probs_file={le / 'cross_validated_predicted_probabilities' / 'imdb_test_set_pyx.npy'}",
                                                           f"labels.probs_ids_file={work / 'ids.json'}"])
    ext_ranked = job_issues(work / "run_pyx")
    results["ours, paper's pyx.npy"] = {**precision_at_k(ext_ranked, verdict), "seconds": ext["seconds"],
                                        "same_set_as_cleanlab": set(ext_ranked) == {ids[i] for i in cl_pyx}}
    return {"confirmed_errors_with_verdicts": sum(verdict.values()), "verdicts": len(verdict), "results": results}


# --------------------------------------------------------------------------------------------- AG News


def flip(labels: np.ndarray, frac: float, classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = rng.random(len(labels)) < frac
    noisy = labels.copy()
    noisy[mask] = (labels[mask] + rng.integers(1, classes, mask.sum())) % classes
    return noisy, mask


def pr(found: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((found & truth).sum())
    return {"flagged": int(found.sum()), "precision": round(tp / max(found.sum(), 1), 3),
            "recall": round(tp / max(truth.sum(), 1), 3)}


def bench_agnews(args) -> dict:
    import pandas as pd

    df = pd.read_csv(SHARED / "ag_news" / "test.csv", header=None, names=["y", "title", "desc"])
    texts = (df.title + ". " + df.desc).tolist()
    true = df.y.to_numpy() - 1
    ids = [f"ag{i:05d}" for i in range(len(df))]
    work = OUT / "agnews"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        noisy, flipped = flip(true, 0.05, 4, np.random.default_rng(seed))
        pq.write_table(pa.table({"id": ids, "text": texts, "label": noisy}), work / f"ag_{seed}.parquet")
        ours = run_job(work / f"ag_{seed}.parquet", work / f"run_{seed}", args.overrides)
        found = np.isin(ids, job_issues(work / f"run_{seed}"))
        probs = probs_of(job_rows(work / f"run_{seed}", ["id", "pred_probs"]), ids)
        cl_idx, cl_s = cleanlab_ranked(noisy, probs)
        cl = np.zeros(len(ids), bool)
        cl[cl_idx] = True
        row = {"seed": seed, "flipped": int(flipped.sum()), "ours": {**pr(found, flipped), "seconds": ours["seconds"]},
               "cleanlab_same_probs": {**pr(cl, flipped), "seconds": round(cl_s, 2)},
               "oof_accuracy_vs_true": round(float((probs.argmax(1) == true).mean()), 3)}
        if args.reference:
            row["cleanlab_workflow"] = reference_workflow(texts, noisy, flipped)
        rows.append(row)
    return {"rows": len(ids), "results": rows}


def reference_workflow(texts: list[str], noisy: np.ndarray, flipped: np.ndarray) -> dict:
    """What a cleanlab user does on one machine: the same hashed features in memory, scikit-learn's lbfgs
    LogisticRegression, 5-fold cross_val_predict, then find_label_issues."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    t0 = time.perf_counter()
    x = HashingVectorizer(n_features=2 ** 18, ngram_range=(1, 2), alternate_sign=False, norm="l2").transform(texts)
    probs = cross_val_predict(LogisticRegression(max_iter=1000, C=10), x, noisy, method="predict_proba",
                              cv=StratifiedKFold(5, shuffle=True, random_state=0), n_jobs=2)
    idx = cleanlab.filter.find_label_issues(noisy, probs, return_indices_ranked_by="self_confidence")
    found = np.zeros(len(noisy), bool)
    found[idx] = True
    return {**pr(found, flipped), "seconds": round(time.perf_counter() - t0, 1)}


# ----------------------------------------------------------------------------------------------- scale


def make_scale(rows: int, out: Path, shard_rows: int = 100_000) -> None:
    """`rows` snippets of Dickens, Twain and Shakespeare (consecutive sentences up to >= 80 characters), labelled
    by author, 5 % flipped (the true author kept in `true_label`); snippets repeat only past one pass over the
    books, then with a round number in the id."""
    from make_dedup_corpus import book_texts

    gutenberg = SHARED / "gutenberg_subset_rcdm_uga" / "gutenberg_dickens_twain_shakespeare.tar.gz"
    snippets, authors = [], []
    for author, _, text in book_texts(gutenberg):
        buf = ""
        for sent in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)):
            buf = f"{buf} {sent}" if buf else sent
            if len(buf) >= 80:
                snippets.append(buf)
                authors.append(author.split(",")[0])
                buf = ""
    names = sorted(set(authors))
    true = np.array([names.index(a) for a in authors])
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, shard_rows):
        idx = np.arange(start, min(start + shard_rows, rows))
        src = idx % len(snippets)
        noisy, _ = flip(true[src], 0.05, len(names), rng)
        pq.write_table(pa.table({
            "id": [f"s{i // len(snippets)}/{j}" for i, j in zip(idx, src)],
            "text": [snippets[j] for j in src],
            "label": [names[k] for k in noisy], "true_label": [names[k] for k in true[src]],
        }), out / f"part-{start // shard_rows:05d}.parquet", compression="zstd")
    print(f"{rows:,} rows from {len(snippets):,} snippets into {out}", file=sys.stderr)


def bench_scale(args) -> dict:
    data = OUT / f"scale_{args.rows}"
    if not data.is_dir():
        make_scale(args.rows, data)
    mb = sum(f.stat().st_size for f in data.glob("*.parquet")) / 1e6
    res = run_job(data, OUT / f"run_scale_{args.rows}", args.overrides)
    rows = job_rows(OUT / f"run_scale_{args.rows}", ["label", "true_label", "label_issue"])
    truth = pc.not_equal(rows["label"], rows["true_label"]).to_numpy(zero_copy_only=False)
    found = rows["label_issue"].to_numpy(zero_copy_only=False)
    return {"rows": args.rows, "parquet_mb": round(mb, 1), **res, "rows_per_s": round(args.rows / res["seconds"]),
            "flips": {**pr(found, truth), "flipped": int(truth.sum())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("imdb", "agnews", "scale"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--reference", action="store_true", help="agnews: also cleanlab's in-memory lbfgs workflow")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = {"imdb": bench_imdb, "agnews": bench_agnews, "scale": bench_scale}[args.what](args)
    result = {"machine": os.uname().nodename, "cpus": 2, "date": time.strftime("%Y-%m-%d"),
              "cleanlab": cleanlab.__version__, "overrides": args.overrides, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
