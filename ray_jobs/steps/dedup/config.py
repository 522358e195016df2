"""The dedup step's settings: exact hash and MinHash-LSH near dedup."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_jobs.steps.dedup.minhash import MinHashConfig, recall_bands_rows

REPRESENTATIVES = ("lowest_id", "longest", "highest_score")
VERIFY = ("exact", "signature", "none")
METHODS = ("near", "exact", "off")
UNITS = ("line", "paragraph")


@dataclass(frozen=True)
class NearDedupConfig(MinHashConfig):
    # How a candidate pair (two documents sharing an LSH band) is decided:
    #   "exact"      the Jaccard of the two shingle sets, computed from the texts of the candidates only (joined to
    #                the pairs by a shuffle). Bands and rows are then chosen so that a pair at the threshold is a
    #                candidate with probability >= candidate_recall (14 x 7 at 0.85: 0.9955), and only pairs with
    #                Jaccard >= threshold become edges. 100 MB: recall 0.99+ at precision 1.0 (benchmarks/RESULTS.md).
    #   "signature"  the share of equal signature values (standard error 0.03 at 128 permutations) >= threshold;
    #                it drops true pairs as often as false ones near the threshold (recall 0.85 at 100 MB).
    #   "none"       every candidate is an edge (bands from the threshold: 8 x 16, a pair at 0.85 is a candidate
    #                with probability 0.46; connected components recover some through chains).
    verify: str = "exact"  # exact | signature | none
    candidate_recall: float = 0.995
    # verify = "exact": a bucket with at most this many distinct texts checks all their pairs (at most 2,016 at
    # 64); a larger one (many variants of one template) checks each member against its first this-many members
    # only, so a bucket costs O(members x 64) checks, not O(members^2).
    bucket_all_pairs_max: int = 64
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
        if self.verify not in VERIFY:
            raise ValueError(f"dedup.near.verify must be one of {', '.join(VERIFY)}; got {self.verify!r}")
        if not 0.0 < self.candidate_recall < 1.0 or self.bucket_all_pairs_max < 2:
            raise ValueError(f"dedup.near.candidate_recall must be in (0, 1) and bucket_all_pairs_max >= 2; got "
                             f"{self.candidate_recall}, {self.bucket_all_pairs_max}")
        self.bands_rows()  # a candidate_recall no banding reaches fails here, not mid-run
        if self.representative not in REPRESENTATIVES:
            raise ValueError(f"dedup.near.representative must be one of {', '.join(REPRESENTATIVES)}; "
                             f"got {self.representative!r}")
        if self.representative == "highest_score" and not self.score_column:
            raise ValueError("dedup.near.representative = 'highest_score' needs dedup.near.score_column (a numeric "
                             "column of the input, e.g. a quality score)")
        if self.cc_fast_path_max_edges < 0 or self.cc_max_rounds < 1:
            raise ValueError("dedup.near.cc_fast_path_max_edges must be >= 0 and cc_max_rounds >= 1")

    def bands_rows(self) -> tuple[int, int]:
        if self.verify == "exact" and not self.bands:
            return recall_bands_rows(self.threshold, self.num_perm, self.candidate_recall)
        return super().bands_rows()


@dataclass(frozen=True)
class LinesConfig:
    # Boilerplate lines (licence footers, navigation, "subscribe" lines): a unit that occurs in at least min_docs
    # of the documents dedup kept stays in the one with the lowest id and leaves the others (steps/dedup/lines.py).
    # Off by default: it changes the text of the rows it touches.
    enabled: bool = False
    # 3: a line shared by two documents is more often a quote than boilerplate (C4 drops repeated three-sentence
    # spans; datatrove's line dedup any repeat)
    min_docs: int = 3
    unit: str = "line"  # line: split at newlines; paragraph: split at blank lines
    min_chars: int = 50  # a row with fewer characters left is dropped (too_short_after_line_dedup)

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"dedup.lines.unit must be one of {', '.join(UNITS)}; got {self.unit!r}")
        if self.min_docs < 2 or self.min_chars < 0:
            raise ValueError(f"dedup.lines.min_docs must be >= 2 and min_chars >= 0; got {self.min_docs}, "
                             f"{self.min_chars}")


@dataclass(frozen=True)
class DedupConfig:
    # What dedup removes: "near" = documents whose shingle-set Jaccard to another is >= dedup.near.threshold
    # (identical texts included: they are labelled exact_duplicate); "exact" = only documents whose lower-cased
    # text equals another's (a hash shuffle, no MinHash); "off" = nothing (the rows pass through).
    # Replaces dedup.exact and dedup.near.enabled: exact = false with near on still removed identical texts.
    method: str = "near"
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
    near: NearDedupConfig = field(default_factory=NearDedupConfig)  # MinHash-LSH settings of method = "near"
    lines: LinesConfig = field(default_factory=LinesConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"dedup.method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.num_buckets < 1 or self.partition_mb < 1 or self.broadcast_max_rows < 0:
            raise ValueError(f"dedup.num_buckets and dedup.partition_mb must be >= 1, broadcast_max_rows >= 0; got "
                             f"{self.num_buckets}, {self.partition_mb}, {self.broadcast_max_rows}")
