"""The training settings (`[train]`, `[train.model]`): imported by the config loader, and by the training code
without it (benchmarks/gpu_check.sh runs the step on a machine without the pipeline's dependencies)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_jobs.errors import check_choice as _choice


@dataclass(frozen=True)
class ModelConfig:
    """A transformers model: random init from these sizes (`arch` llama or gpt2), or `pretrained` (local path or hub
    id) as it is. The defaults are the tiny CPU model (~3.4 M parameters with SmolLM2's 49,152-token vocabulary)."""

    arch: str = "llama"
    pretrained: str = ""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 0  # 0 = num_heads (no grouped-query attention)
    intermediate_size: int = 0  # 0 = 4 x hidden_size (llama: 8/3 x, rounded to 64, as Llama does)
    vocab_size: int = 0  # 0 = the tokenizer's
    tie_embeddings: bool = True  # the embedding is most of a small model's parameters

    def __post_init__(self) -> None:
        _choice("train.model.arch", self.arch, ("llama", "gpt2"))
        if not self.pretrained and self.hidden_size % self.num_heads:
            raise ValueError(f"train.model.hidden_size ({self.hidden_size}) must be a multiple of num_heads "
                             f"({self.num_heads})")


@dataclass(frozen=True)
class TrainConfig:
    """`ray-jobs train`: Ray Train TorchTrainer workers streaming the packed token rows."""

    # A pack or tokenize stage folder (or any Parquet of token rows); "" = run the pipeline through pack into
    # the output folder first, from [input].
    data: str = ""
    split: str = "train"
    model: ModelConfig = field(default_factory=ModelConfig)
    num_workers: int = 2
    # Ray reserves it per worker. Streaming from the pipeline, train needs num_workers x this + tokenize.actors x
    # tokenize.actor_cpus + 1 read CPU at once (train/job.py check_cpus refuses more than the cluster has): on 2
    # CPUs that is e.g. 2 x 0.25 + 1 x 0.5 + 1 (cluster/configs/train-tiny-cpu.toml).
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    micro_batch_size: int = 8  # rows per worker per forward pass
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 100
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # the schedule ends at lr x this
    warmup_steps: int = 10
    schedule: str = "cosine"  # cosine | linear | constant (after the linear warm-up)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; or bf16 | fp32
    # auto = flash_attention_2 when flash_attn imports on CUDA, else sdpa (PyTorch picks its flash kernel on Ampere+)
    attention: str = "auto"
    # Packed rows: "document" = no attention across documents (position ids restart per document: flash varlen
    # or a block-diagonal mask), "causal" = plain causal attention over the whole row.
    packed_attention: str = "document"
    gradient_checkpointing: bool = False
    optimizer: str = "auto"  # auto = bitsandbytes PagedAdamW8bit on CUDA when importable, else AdamW; adamw; adamw8bit
    # Unpacked token rows: batches are padded to their longest row; rows are first sorted by length within
    # windows of this many batches, so a batch holds similar lengths (0 = no bucketing).
    bucket_batches: int = 16
    checkpoint_every: int = 50  # steps; the last step always checkpoints
    keep_checkpoints: int = 2
    seed: int = 0
    peak_tflops: float = 0.0  # for MFU; 0 = from the GPU's name (H100/H200 989, A100 312 bf16 dense), none on CPU

    def __post_init__(self) -> None:
        _choice("train.schedule", self.schedule, ("cosine", "linear", "constant"))
        _choice("train.precision", self.precision, ("auto", "bf16", "fp32"))
        _choice("train.attention", self.attention, ("auto", "sdpa", "flash_attention_2", "eager"))
        _choice("train.packed_attention", self.packed_attention, ("document", "causal"))
        _choice("train.optimizer", self.optimizer, ("auto", "adamw", "adamw8bit"))
        for name in ("num_workers", "micro_batch_size", "grad_accum", "max_steps", "checkpoint_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1; got {getattr(self, name)}")
