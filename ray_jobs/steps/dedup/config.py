"""The dedup step's settings: exact hash and MinHash-LSH near dedup."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_jobs.steps.dedup.minhash import MinHashConfig

REPRESENTATIVES = ("lowest_id", "longest", "highest_score")


@dataclass(frozen=True)
class NearDedupConfig(MinHashConfig):
    enabled: bool = True
    # Candidate pairs from a shared band are false positives with the probability shown by
    # `candidate_probability`; "signature" drops a bucket member whose estimated Jaccard to the bucket's smallest
    # member is below the threshold. It carries the 128 x 4-byte signature through the shuffle (~7x its volume).
    verify: str = "none"  # none | signature
    # Which member of a cluster is kept: the smallest id (stable across runs and layouts), the longest text, or
    # the highest value of `score_column`; ties go to the smallest id.
    representative: str = "lowest_id"
    score_column: str = ""
    # Connected components on one worker (scipy) when the candidate graph has at most this many edges
    # (16 bytes each: 4 M edges = 64 MB); above it, the distributed large-star/small-star rounds.
    cc_fast_path_max_edges: int = 4_000_000
    cc_max_rounds: int = 100  # large-star/small-star needs O(log^2 n) rounds; this only guards against a bug
    # Saved indexes (`RUN/dedup/_index` folders) of corpora already deduplicated: new documents that match them
    # are dropped, the indexed documents are never touched or recomputed.
    index_from: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.verify not in ("none", "signature"):
            raise ValueError(f"dedup.near.verify must be 'none' or 'signature'; got {self.verify!r}")
        if self.representative not in REPRESENTATIVES:
            raise ValueError(f"dedup.near.representative must be one of {', '.join(REPRESENTATIVES)}; "
                             f"got {self.representative!r}")
        if self.representative == "highest_score" and not self.score_column:
            raise ValueError("dedup.near.representative = 'highest_score' needs dedup.near.score_column (a numeric "
                             "column of the input, e.g. a quality score)")
        if self.cc_fast_path_max_edges < 0 or self.cc_max_rounds < 1:
            raise ValueError("dedup.near.cc_fast_path_max_edges must be >= 0 and cc_max_rounds >= 1")


@dataclass(frozen=True)
class DedupConfig:
    exact: bool = True
    # Rows are shuffled into this many hash buckets; one bucket is deduplicated in one call, so its size
    # bounds worker memory: 1 B docs x 4 kB / 4096 buckets ~ 1 GB per bucket.
    num_buckets: int = 64
    # Near dedup sizes each shuffle (band buckets, joins, graph rounds) to one partition per this many MB of
    # its input, at most num_buckets: a reduce task holds one partition. On the 4 MB sample that is 1
    # partition per shuffle instead of 64, which took the near-dedup joins from 14-16 s to ~2 s each.
    partition_mb: int = 128
    # At most this many documents in near-dup clusters: the cluster table (~100 bytes a row, 200 MB at 2 M) goes
    # to every worker and the rows are marked where they are. Above it, a hash join shuffles the rows by id (on
    # 100 MB here the join cost ~6 s of a 59 s run, and it moves all the text through the object store).
    broadcast_max_rows: int = 2_000_000
    lowercase: bool = True  # hash the lower-cased text: "The cat" and "the cat" are the same document
    near: NearDedupConfig = field(default_factory=NearDedupConfig)  # MinHash-LSH, after exact dedup

    def __post_init__(self) -> None:
        if self.num_buckets < 1 or self.partition_mb < 1 or self.broadcast_max_rows < 0:
            raise ValueError(f"dedup.num_buckets and dedup.partition_mb must be >= 1, broadcast_max_rows >= 0; got "
                             f"{self.num_buckets}, {self.partition_mb}, {self.broadcast_max_rows}")
