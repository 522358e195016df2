"""The pack step's settings."""

from __future__ import annotations

from dataclasses import dataclass

from ray_jobs.errors import check_choice


@dataclass(frozen=True)
class PackConfig:
    """Packing the tokenized documents into fixed-length training rows (tokenize/pack.py)."""

    enabled: bool = True
    seq_len: int = 2048
    overflow: str = "split"  # a document longer than seq_len: "split" into pieces (no token lost) or "crop" it
    # Documents packed together: more fill rows better (best-fit decreasing within the batch); 4096 documents of
    # the sample leave ~1 % padding at seq_len 2048.
    docs_per_batch: int = 4096
    pad_id: int = 0  # any id: padding has label -100 and lies outside every document's seq_lens
    # Copies for other trainers: "bin" = RUN/export/tokens/<split>.bin (the documents' ids back to back, uint16
    # below 65,536 token ids, else uint32) + <split>.idx.npy (document offsets), nanoGPT-style; "webdataset" =
    # RUN/export/tokens-webdataset/<split>/ tar shards of the packed rows, one .npy per column; "megatron" =
    # RUN/export/megatron/<split>.bin + .idx, Megatron-LM's indexed dataset (MMIDIDX: one sequence per document,
    # Megatron's GPTDataset packs them itself; --data-path RUN/export/megatron/<split>).
    exports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"pack.seq_len must be >= 2; got {self.seq_len}")
        check_choice("pack.overflow", self.overflow, ("split", "crop"))
        if self.docs_per_batch < 1:
            raise ValueError(f"pack.docs_per_batch must be >= 1; got {self.docs_per_batch}")
        for e in self.exports:
            check_choice("pack.exports[]", e, ("bin", "webdataset", "megatron"))
