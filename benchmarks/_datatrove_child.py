"""datatrove's 4-stage MinHash deduplication of a Parquet corpus, as the child process of
`benchmarks/dedup_quality.py --methods datatrove`. Runs with the datatrove venv's python (it imports datatrove):

    /work/bench-venv-datatrove/bin/python benchmarks/_datatrove_child.py JOB.json OUT.json

JOB: {"corpus", "work" (a fresh folder), "char" (bool), "tasks", "workers"}. OUT: the seconds of each stage and of
the four together, the kept / excluded ids of the filter stage, the ids behind the cluster stage's .remove files,
and the config. Also home of CharShingleSignature, the character-shingle variant of MinhashDedupSignature.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_quality import shingles  # noqa: E402  the truth's 5-character shingles


class CharShingleSignature(MinhashDedupSignature):
    """MinhashDedupSignature with 5-character shingles of re.sub(r"\\s+", " ", text.lower()).strip() (the truth's)
    instead of 5-word n-grams, each hashed with datatrove's hash function (datatrove has no option for it)."""

    def get_shingles(self, text: str) -> np.ndarray:
        return np.fromiter((self._hash_func(s) for s in shingles(text)), dtype=np.uint64).reshape((-1, 1))


def reader(corpus: str) -> ParquetReader:
    # glob: make_dedup_corpus.py leaves a .json next to the shards; each task reads whole files (files[rank::tasks]).
    # read_metadata=False: only text and id (the writers would otherwise infer a null type from a first null parent)
    return ParquetReader(corpus, text_key="text", id_key="id", glob_pattern="*.parquet", read_metadata=False)


def read_ids(folder: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [d for f in sorted(folder.glob("*.parquet"))
            for d in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def main(job_path: str, out_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    corpus, work, tasks, workers = job["corpus"], Path(job["work"]), job["tasks"], job["workers"]
    config = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes, 64-bit xxhash, seed 1
    signature = (CharShingleSignature if job["char"] else MinhashDedupSignature)(
        output_folder=str(work / "signatures"), config=config)
    stages = {
        "signatures": LocalPipelineExecutor([reader(corpus), signature], tasks=tasks, workers=workers,
                                            logging_dir=str(work / "logs/signatures")),
        # a multiple of num_buckets tasks (datatrove asserts it): one per bucket
        "buckets": LocalPipelineExecutor(
            [MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                                 config=config)],
            tasks=config.num_buckets, workers=workers, logging_dir=str(work / "logs/buckets")),
        "cluster": LocalPipelineExecutor(  # one task (datatrove asserts it)
            [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                 config=config)],
            tasks=1, logging_dir=str(work / "logs/cluster")),
        "filter": LocalPipelineExecutor(
            [reader(corpus),
             MinhashDedupFilter(input_folder=str(work / "remove"),
                                exclusion_writer=ParquetWriter(str(work / "removed"))),
             ParquetWriter(str(work / "output"))],
            tasks=tasks, workers=workers, logging_dir=str(work / "logs/filter")),
    }
    seconds = {}
    t0 = time.perf_counter()
    for name, executor in stages.items():
        t = time.perf_counter()
        executor.run()
        seconds[name] = time.perf_counter() - t
    total = time.perf_counter() - t0

    # untimed: the ids behind the cluster stage's .remove files (document indices of each task's reader order)
    cluster_removed = []
    for rank in range(tasks):
        path = work / "remove" / f"{rank:06d}.remove"
        if path.exists():
            order = [doc.id for doc in reader(corpus).run(rank=rank, world_size=tasks)]
            data = path.read_bytes()
            cluster_removed += [order[i] for (i,) in struct.iter_unpack("<I", data)]
    record = struct.calcsize(f"<{config.hashes_per_bucket}{config.hash_config.struct_format}I")
    with_signature = sum(f.stat().st_size // record for f in (work / "signatures" / "bucket_000").glob("*.sig"))
    Path(out_path).write_text(json.dumps({
        "seconds": total, "stage_seconds": seconds,
        "kept_ids": read_ids(work / "output"), "excluded_ids": read_ids(work / "removed"),
        "cluster_removed_ids": cluster_removed, "docs_with_signature": with_signature,
        "config": {"minhash": {**asdict(config), "hashes": config.num_buckets * config.hashes_per_bucket,
                               "shingles": "5-character (CharShingleSignature)" if job["char"]
                               else f"{config.n_grams}-word n-grams (datatrove word tokenizer, simplify_text)"},
                   "tasks": {"signatures": tasks, "buckets": config.num_buckets, "cluster": 1, "filter": tasks},
                   "workers": workers},
        "versions": {p: version(p) for p in ("datatrove", "numpy", "spacy", "xxhash", "pyarrow")},
    }))


if __name__ == "__main__":
    # re-imported under its own name, so that the pool workers unpickle _datatrove_child.CharShingleSignature
    import _datatrove_child

    _datatrove_child.main(*sys.argv[1:3])
