"""One typed config: a TOML file into frozen dataclasses, with strict `--set a.b=c` overrides.

Every section is a frozen dataclass whose defaults carry the reason for their value. Loading is strict: an
unknown key, a wrong type or an invalid value fails at once with a message that names the valid choices, so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_jobs.dedup.leakage import LeakageConfig
from ray_jobs.dedup.lsh import NearDedupConfig
from ray_jobs.multimodal.audio import AudioConfig
from ray_jobs.multimodal.images import ImageConfig
from ray_jobs.multimodal.pdf import PdfConfig
from ray_jobs.stages.langid import LangIdConfig
from ray_jobs.stages.normalize import NormalizeConfig
from ray_jobs.stages.quality import QualityConfig

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_TOKENIZER = str(PACKAGE_DIR / "assets" / "smollm2_tokenizer")
INPUT_FORMATS = ("auto", "parquet", "jsonl", "csv", "text", "webdataset", "hf")
EXPORT_FORMATS = ("none", "parquet", "jsonl", "webdataset", "hf")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class InputConfig:
    # Files, folders or globs; folders are walked for files of the chosen (or detected) format.
    paths: tuple[str, ...] = (str(REPO_DIR / "shards" / "sample" / "parquet"),)
    format: str = "auto"  # auto = by file extension (.parquet, .jsonl[.gz|.zst], .csv, .txt, .tar)
    text_column: str = "text"  # renamed to `text` when different
    # Chat / instruction data without a text column: `messages` ([{role, content}], kept as JSON in `messages`) or
    # an instruction + response pair (made into messages); `text` becomes their contents, for cleaning and dedup.
    messages_column: str = "messages"
    instruction_column: str = "instruction"
    response_column: str = "response"
    id_column: str = "id"  # used as the row id when present; otherwise "<relative path>:<offset>"
    text_mode: str = "line"  # plain .txt files: one document per "line" or per "file"
    csv_delimiter: str = ","
    # A tar member larger than this is not read into memory: its sample is quarantined (a text sample of
    # hundreds of MB is a broken or hostile shard, not a document).
    max_member_mb: int = 256
    # An HF `datasets` input: a local path / save_to_disk folder / hub id, with its split.
    hf_split: str = "train"

    def __post_init__(self) -> None:
        _choice("input.format", self.format, INPUT_FORMATS)
        _choice("input.text_mode", self.text_mode, ("line", "file"))
        if not self.paths:
            raise ValueError("input.paths is empty: give at least one file, folder or glob")


@dataclass(frozen=True)
class RayConfig:
    address: str = ""  # "" = RAY_ADDRESS if set, else start a local Ray
    num_cpus: int = 0  # local Ray only; 0 = all cores
    # local Ray only; 0 = Ray's default (30 % of RAM). Smaller stores make Ray spill blocks to disk and hold back
    # reads (backpressure) instead of growing: 128 MB ran dedup over 1.1 GB (benchmarks/RESULTS.md).
    object_store_mb: int = 0
    # local Ray only; on 127.0.0.1. Off for the pipeline (saves ~200 MB and start-up time); `ray-jobs train` turns
    # it on: Ray Train V2's placement-group cleaner polls the State API, which the dashboard serves.
    include_dashboard: bool = False
    # 4 MB: with Ray's default (128 MB) a small corpus becomes one block and one task, so one core idles.
    target_max_block_size_mb: int = 4
    batch_size: int = 1024  # rows per map_batches call: large enough to amortise the call, small for memory
    progress_bars: bool = True
    # The shuffle behind exact dedup. "default" = Ray 2.60's own (shuffle_v2), made for large data. On 60 MB
    # (2 cores) "sort_shuffle_pull_based" ran the dedup stage in 3.5 s vs 7.2 s: fixed costs dominate there.
    shuffle_strategy: str = "default"

    def __post_init__(self) -> None:
        _choice("ray.shuffle_strategy", self.shuffle_strategy,
                ("default", "shuffle_v2", "hash_shuffle", "sort_shuffle_pull_based", "sort_shuffle_push_based"))
        if self.num_cpus < 0 or self.object_store_mb < 0 or self.batch_size < 1 or self.target_max_block_size_mb < 1:
            raise ValueError("ray.num_cpus and ray.object_store_mb must be >= 0, ray.batch_size and "
                             "ray.target_max_block_size_mb >= 1")


@dataclass(frozen=True)
class CleanConfig:
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    # Rows whose detected language is not listed are dropped as `lang_not_allowed`; empty = allow every language.
    allowed_langs: tuple[str, ...] = ("en",)
    min_lang_score: float = 0.0  # below this the language counts as undetermined ("und")
    # Language ID loads a model: it runs in an actor pool. Ray reserves 1 CPU per read task, so actors must
    # leave one free: 2 actors x 0.9 CPU on a 2-core machine starved the read and hung (seen here); 2 x 0.5 runs.
    actors: int = 2
    actor_cpus: float = 0.5


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


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.90
    val: float = 0.05
    test: float = 0.05
    seed: int = 0
    stratify_by: str = ""  # a label column: exact per-class proportions; "" = plain hash split
    # Rows with the same value of this column land in the same split (e.g. a cluster id from near-dedup).
    group_by: str = "id"

    def __post_init__(self) -> None:
        total = self.train + self.val + self.test
        if min(self.train, self.val, self.test) < 0 or abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"split.train + split.val + split.test must be 1 with none negative; got "
                f"{self.train} + {self.val} + {self.test} = {total}"
            )


@dataclass(frozen=True)
class TokenizeConfig:
    # A tokenizer.json file, a folder (tokenizer.json, or vocab.json + merges.txt), or a hub id.
    tokenizer: str = DEFAULT_TOKENIZER
    # Cut longer documents here (0 = never): with packing on (pack.overflow = "split"), long documents are cut
    # into seq_len pieces there instead, so no token is lost.
    max_length: int = 0
    add_eos: bool = True  # causal LM: the model must learn where a document ends
    eos_token: str = "auto"  # "auto" = <|endoftext|>, </s> or <eos>, whichever the tokenizer has
    keep_text: bool = False  # token shards are read by trainers; the text is still in the split stage
    # auto: rows with a `messages` column (chat data, see input.messages_column) go through the chat template,
    # others are plain text; "text" / "chat" force one.
    format: str = "auto"
    # "auto" = the tokenizer's own (chat_template in its tokenizer_config.json), or a .jinja file, or the text.
    chat_template: str = "auto"
    actors: int = 2
    actor_cpus: float = 0.5  # see clean.actor_cpus

    def __post_init__(self) -> None:
        if self.max_length == 1 or self.max_length < 0:
            raise ValueError(f"tokenize.max_length must be 0 (no limit) or >= 2; got {self.max_length}")
        _choice("tokenize.format", self.format, ("auto", "text", "chat"))


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
    # RUN/export/tokens-webdataset/<split>/ tar shards of the packed rows, one .npy per column.
    exports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"pack.seq_len must be >= 2; got {self.seq_len}")
        _choice("pack.overflow", self.overflow, ("split", "crop"))
        if self.docs_per_batch < 1:
            raise ValueError(f"pack.docs_per_batch must be >= 1; got {self.docs_per_batch}")
        for e in self.exports:
            _choice("pack.exports[]", e, ("bin", "webdataset"))


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
    cpus_per_worker: float = 0.5  # a 2-CPU machine keeps a CPU for Ray Data's read tasks
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


@dataclass(frozen=True)
class IngestConfig:
    """`ray-jobs ingest MANIFEST`: images, PDF pages and audio clips as rows (ray_jobs/multimodal/)."""

    image: ImageConfig = field(default_factory=ImageConfig)
    pdf: PdfConfig = field(default_factory=PdfConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    # COCO captions JSON: the image folder; "" = the folder named after the JSON (captions_train2017.json ->
    # ../train2017 next to the annotations folder)
    coco_images: str = ""
    rows_per_task: int = 16  # assets per task: PDFs and audio clips are seconds each


@dataclass(frozen=True)
class LabelsConfig:
    """Label-error detection (`ray-jobs labels`, ray_jobs/labels/): out-of-fold probabilities from a deliberately
    simple model, then confident learning. In `ray-jobs run` it runs after split (or leakage) when enabled."""

    enabled: bool = False
    label_column: str = "label"  # the text is input.text_column (renamed to `text` when read)
    # Out-of-fold probabilities: every row is predicted by the model that did not see it. 5 folds: each model
    # sees 80 % of the rows (cleanlab's default cv_n_folds is 5 too).
    folds: int = 5
    seed: int = 0
    # The model: hashed word n-grams (scikit-learn's HashingVectorizer, l2-normalised) + logistic regression by
    # SGD (log loss), one Ray task per fold streaming the feature blocks. On AG News test (7,600 rows, 5 % flipped)
    # word 1-2 grams, 2^18 features, alpha 1e-5 and 10 epochs found the flips at P 0.42 / R 0.88 (prune_by_noise_rate),
    # the same as lbfgs LogisticRegression (0.41 / 0.86) in 1/200 of its time.
    ngram_max: int = 2
    char_ngrams: bool = False  # add hashed char 3-5 grams (for short or noisy texts); ~4x the features per row
    n_features: int = 2 ** 18  # 2 MB of float64 weights per class per fold
    alpha: float = 1e-5  # L2 strength: 1e-4 underfit (recall 0.82), 1e-6 overfit (precision 0.35) on AG News
    epochs: int = 10
    # SGD sees this many random blocks (4 MB of text each by default) shuffled together per step, so a label-sorted
    # input still gives it mixed batches; the fold task's memory is these blocks plus the weights.
    mix_blocks: int = 8
    trainer_cpus: float = 1.0  # per fold task; folds run side by side as CPUs allow
    # Or bring your own out-of-sample probabilities: a list<float> column of the rows, or a .npy (rows x classes)
    # with a file of the row ids in the same order (.json list, .npy or one id per line); class i is the i-th
    # label value in sorted order.
    probs_column: str = ""
    probs_file: str = ""
    probs_ids_file: str = ""
    # cleanlab's filters: "prune_by_noise_rate" (its default: per (given, true) class pair, the rows with the
    # largest margin, as many as the calibrated confident joint estimates), "confident_learning" (the
    # off-diagonal of the confident joint), "both" (rows flagged by prune_by_noise_rate and by prune_by_class).
    filter_by: str = "prune_by_noise_rate"
    rank_by: str = "self_confidence"  # or "normalized_margin": lowest first in the ranked label_issues table
    # "drop": suspects go to status=label_issue (the next stage reads kept rows only); "flag": they stay kept,
    # marked by the label_issue column. Either way RUN/labels/_issues/ holds the ranked table.
    action: str = "drop"
    max_classes: int = 1000  # a label column with more values is probably not a label (an id, a free text)

    def __post_init__(self) -> None:
        _choice("labels.filter_by", self.filter_by, ("prune_by_noise_rate", "confident_learning", "both"))
        _choice("labels.rank_by", self.rank_by, ("self_confidence", "normalized_margin"))
        _choice("labels.action", self.action, ("drop", "flag"))
        if self.folds < 2 or min(self.epochs, self.ngram_max, self.mix_blocks) < 1 or self.n_features < 16:
            raise ValueError(f"labels.folds must be >= 2, labels.epochs, ngram_max and mix_blocks >= 1, n_features >= "
                             f"16; got {self.folds}, {self.epochs}, {self.ngram_max}, {self.mix_blocks}, "
                             f"{self.n_features}")
        if bool(self.probs_file) != bool(self.probs_ids_file):
            raise ValueError("labels.probs_file needs labels.probs_ids_file (the row id of each of its rows) and "
                             "the other way round; set both or neither")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = str(REPO_DIR / "shards" / "out" / "run")
    # Besides the Parquet stage folders, export the final kept rows (split stage) in this format.
    export: str = "none"

    def __post_init__(self) -> None:
        _choice("output.export", self.export, EXPORT_FORMATS)


@dataclass(frozen=True)
class RunConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)  # uses dedup.near's MinHash settings
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)


# --------------------------------------------------------------------------------------------- loading


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check `value` against the annotation `tp`, converting only lossless cases (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"{path} is a section: expected a table like [{path}]; got {value!r}")
        return _build(tp, value, path)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{path} expects a list; got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{path}[]", args[0], v) for v in value)
        if len(value) != len(args):
            raise TypeError(f"{path} expects {len(args)} items ({', '.join(a.__name__ for a in args)}); got {value!r}")
        return tuple(_coerce(f"{path}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        raise AssertionError(f"unsupported annotation for {path}: {tp}")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise TypeError(f"{path} expects {tp.__name__}; got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        raise ValueError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(names)}")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for TOML/JSON output and fingerprints."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return to_dict(v)
    return [_plain(x) for x in v] if isinstance(v, (tuple, list)) else v


def _parse_value(raw: str) -> Any:
    """A `--set` value is a TOML literal (`3`, `0.5`, `true`, `["en","de"]`); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. clean.quality.min_words=20); got {item!r}")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"--set {key}: {p} is a value, not a section")
        node[parts[-1]] = _parse_value(raw.strip())
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML file (or the defaults when `path` is None), apply `key=value` overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist; pass a TOML file (see cluster/configs/)")
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    return _build(RunConfig, apply_overrides(data, list(overrides or [])))


def to_toml(cfg: Any) -> str:
    """Resolved config as TOML (written into every run directory)."""
    lines: list[str] = []

    def emit(section: str, d: dict[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars:
            if section:
                lines.append(f"\n[{section}]")
            for k, v in scalars.items():
                lines.append(f"{k} = {_toml_literal(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                emit(f"{section}.{k}" if section else k, v)

    emit("", to_dict(cfg))
    return "\n".join(lines).lstrip() + "\n"


def _toml_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
