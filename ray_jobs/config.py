"""One typed config: a TOML file into frozen dataclasses, with strict `--set a.b=c` overrides.

Every section is a frozen dataclass whose defaults carry the reason for their value. Loading is strict: an
unknown key, a wrong type or an invalid value fails at once with a message that names the valid choices, so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_jobs.errors import UserError
from ray_jobs.errors import check_choice as _choice
from ray_jobs.ingest.audio import AudioConfig
from ray_jobs.ingest.images import ImageConfig
from ray_jobs.ingest.pdf import PdfConfig
from ray_jobs.steps.clean.config import CleanConfig
from ray_jobs.steps.decontam.config import DecontamConfig
from ray_jobs.steps.dedup.config import DedupConfig
from ray_jobs.steps.labels.config import LabelsConfig
from ray_jobs.steps.leakage.config import LeakageConfig
from ray_jobs.steps.pack.config import PackConfig
from ray_jobs.steps.quality_model.config import QualityModelConfig
from ray_jobs.steps.split.config import SplitConfig
from ray_jobs.steps.tokenize.config import TokenizeConfig
from ray_jobs.steps.url_filter.config import UrlFilterConfig
from ray_jobs.train.config import TrainConfig

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
INPUT_FORMATS = ("auto", "parquet", "jsonl", "csv", "text", "webdataset", "hf", "warc")
WARC_EXTRACTORS = ("resiliparse", "trafilatura")
EXPORT_FORMATS = ("none", "parquet", "jsonl", "webdataset", "hf")


@dataclass(frozen=True)
class InputConfig:
    # Files, folders or globs; folders are walked for files of the chosen (or detected) format.
    paths: tuple[str, ...] = (str(REPO_DIR / "shards" / "sample" / "parquet"),)
    # auto = by file extension (.parquet, .jsonl[.gz|.zst], .csv, .txt, .tar, .warc[.gz], .wet[.gz])
    format: str = "auto"
    text_column: str = "text"  # renamed to `text` when different
    # Chat / instruction data without a text column: `messages` ([{role, content}], kept as JSON in `messages`) or
    # an instruction + response pair (made into messages); `text` becomes their contents, for cleaning and dedup.
    messages_column: str = "messages"
    instruction_column: str = "instruction"
    response_column: str = "response"
    id_column: str = "id"  # used as the row id when present; otherwise "<relative path>:<offset>"
    text_mode: str = "line"  # plain .txt files: one document per "line" or per "file"
    csv_delimiter: str = ","
    # Limits on what one read task holds, each over-limit record a quarantine row naming its key (MB = 2^20 bytes).
    # A tar member larger than this is not read into memory: its sample is quarantined (a text sample of
    # hundreds of MB is a broken or hostile shard, not a document).
    max_member_mb: int = 256
    # The longest line (JSONL, text, CSV) held in memory; a longer one is skipped 1 MB at a time and quarantined.
    # Cost: a read task holds ~3x this while it parses a line (its bytes, the decoded str, the parsed object).
    # Above max_record_mb because JSON escapes make a line longer than its text (\u00e9: 6 bytes for 2).
    max_line_mb: int = 64
    # The largest record passed on as a row (a JSONL or text line, a CSV record, a .txt file read whole, a Parquet
    # or HF text value). Cost: each later step holds it whole (the tokenizer ~5x its bytes in ids and offsets); the
    # longest documents of web and book corpora are a few MB.
    max_record_mb: int = 32
    # The most bytes read from one file after decompression (.gz, .zst; plain files too); past it the rest of the
    # file is one quarantine row. Records stream, so this bounds time and output disk, not memory: a 40 kB .gz
    # of zeros expands to 40 MB, a 1 MB one to ~1 GB. 64 GB: above the largest real single-file shards (the
    # Pile's .jsonl.zst files hold ~45 GB each).
    max_decompressed_mb: int = 65536
    # An HF `datasets` input: a local path / save_to_disk folder / hub id, with its split.
    hf_split: str = "train"
    # WARC: how the main text of an HTML response is found. resiliparse: 888 pages/s on one core against
    # trafilatura's 36 on the 37 responses of the dolma sample WARCs, median word agreement 0.85, no empty page from
    # either (benchmarks/RESULTS.md, "WARC input"); trafilatura cuts more boilerplate at 1/25 of the speed.
    warc_extractor: str = "resiliparse"
    # WARC: the payload types (WARC-Identified-Payload-Type, else the HTTP Content-Type) read as documents; the
    # HTML ones go through warc_extractor, any other (e.g. "text/plain") is taken as text. Every other response
    # (images, PDFs, JSON) is one quarantine row naming its type. WET `conversion` records are text already.
    warc_content_types: tuple[str, ...] = ("text/html", "application/xhtml+xml")

    def __post_init__(self) -> None:
        _choice("input.format", self.format, INPUT_FORMATS)
        _choice("input.text_mode", self.text_mode, ("line", "file"))
        _choice("input.warc_extractor", self.warc_extractor, WARC_EXTRACTORS)
        if self.warc_extractor == "trafilatura" and importlib.util.find_spec("trafilatura") is None:
            raise UserError("input.warc_extractor = trafilatura, but the trafilatura package is not installed; "
                            "pip install trafilatura (it is in the `bench` extra), or use resiliparse")
        if not self.warc_content_types:
            raise ValueError('input.warc_content_types is empty: give the payload types to read, e.g. ["text/html"]')
        if not self.paths:
            raise ValueError("input.paths is empty: give at least one file, folder or glob")
        for key in ("max_member_mb", "max_line_mb", "max_record_mb", "max_decompressed_mb"):
            if getattr(self, key) < 1:
                raise ValueError(f"input.{key} must be at least 1 (MB); got {getattr(self, key)}")


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
    # Where the pipeline's model-holding steps (language ID, the tokenizer) run: "tasks" = each worker process sets
    # the model up once and reuses it, and the read, the fused steps and the write are one task per file group;
    # "actors" = an actor pool of <step>.actors x <step>.actor_cpus (a model too large to load once per process,
    # or a GPU one). Actor pools split 2 cores into 2 x 0.5 CPU of actors and 1 CPU for reads and writes: pass 3
    # took 267 s against the plain loop's 88 s at 1.1 GB (benchmarks/RESULTS.md, docs/ARCHITECTURE.md).
    stateful_in: str = "tasks"
    # A compact phase (dedup, split, leakage over id + digest columns) whose columns are at most this many MB runs
    # in one Ray task, in-process (runtime/local.py), instead of ~18 Ray Data executions (114 s at 1.1 GB, ~170 MB
    # of columns, where one process needs ~10 s). Its memory is a few times this (band rows carry signatures).
    # 0 = always distributed.
    local_compact_mb: int = 1024

    def __post_init__(self) -> None:
        _choice("ray.stateful_in", self.stateful_in, ("tasks", "actors"))
        _choice("ray.shuffle_strategy", self.shuffle_strategy,
                ("default", "shuffle_v2", "hash_shuffle", "sort_shuffle_pull_based", "sort_shuffle_push_based"))
        if min(self.num_cpus, self.object_store_mb, self.local_compact_mb) < 0 \
                or min(self.batch_size, self.target_max_block_size_mb) < 1:
            raise ValueError("ray.num_cpus, ray.object_store_mb and ray.local_compact_mb must be >= 0, "
                             "ray.batch_size and ray.target_max_block_size_mb >= 1")


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
    # Absolute folders, besides the manifest's own (for COCO the image folder), that its assets may resolve into
    # (symlinks followed). Empty: a manifest reads only files under it, so `../` or `/etc/...` in a manifest from
    # elsewhere never makes the job read and copy a file the user did not hand over; each such line is
    # quarantined naming the folder to add here.
    allowed_roots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        relative = [r for r in self.allowed_roots if not Path(r).is_absolute()]
        if relative:
            raise UserError(f"ingest.allowed_roots must be absolute folders; got {relative}: write each in full, "
                            f"e.g. {str(Path(relative[0]).resolve())!r}")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = str(REPO_DIR / "shards" / "out" / "run")
    # Besides the Parquet stage folders, export the final kept rows (split stage) in this format.
    export: str = "none"
    # Full rows of these steps too (e.g. ["split"], ["tokenize"]). By default a run writes its text once (the
    # clean step's folder); the global steps after it write one compact decision row per document (id, status or
    # split, what they added) and tokenize passes its rows straight into pack. A step listed here writes its
    # kept rows whole, at the cost of one more copy of the corpus on disk (and, for a global step, one more read
    # of the text). output.export implies "split", pack.exports "bin" implies "tokenize".
    keep: tuple[str, ...] = ()
    # report.html scans at most this many MB of the final text (a seeded sample of row groups beyond it); its other
    # figures come from stats.json and the column footers. 0 = scan everything. The scan re-normalises the text
    # (~10 CPU s per 120 MB here): 256 MB made the report ~12 s, 64 MB keeps it a few seconds at any corpus size.
    report_scan_mb: int = 64

    def __post_init__(self) -> None:
        _choice("output.export", self.export, EXPORT_FORMATS)


@dataclass(frozen=True)
class RunConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    url_filter: UrlFilterConfig = field(default_factory=UrlFilterConfig)  # before clean; off without lists
    clean: CleanConfig = field(default_factory=CleanConfig)
    quality_model: QualityModelConfig = field(default_factory=QualityModelConfig)  # after clean; off without a model
    dedup: DedupConfig = field(default_factory=DedupConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    leakage: LeakageConfig = field(default_factory=LeakageConfig)  # uses dedup.near's MinHash settings
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    pack: PackConfig = field(default_factory=PackConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    # Sections of steps registered from outside the package (steps/registry.py `Step.config_cls`), by name.
    extra: dict = field(default_factory=dict)


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


# Keys that were renamed: the old name fails with the new one in the message.
_DEDUP_METHOD = ('dedup.method ("near": near and exact duplicates, "exact": identical texts only, "off"; the old '
                 'dedup.exact = false with near dedup on still removed identical texts)')
RENAMED: dict[str, str] = {"dedup.exact": _DEDUP_METHOD, "dedup.near.enabled": _DEDUP_METHOD}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
    for key in data:
        old = f"{prefix}.{key}" if prefix else key
        if old in RENAMED:
            raise UserError(f"config key {old} was renamed to {RENAMED[old]}; rename it in your config or --set")
    if cls is RunConfig:
        from ray_jobs.steps.registry import config_sections

        extra_cls = config_sections()
        extra = {k: _build(extra_cls[k], data.get(k, {}), k) for k in extra_cls}
        data = {k: v for k, v in data.items() if k not in extra_cls}
        names_all = names + sorted(extra_cls)
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"[{prefix}]" if prefix else "the top level"
        valid = names_all if cls is RunConfig else names
        raise UserError(f"unknown key(s) {', '.join(unknown)} in {where}; valid keys: {', '.join(valid)}")
    kwargs = {k: _coerce(f"{prefix}.{k}" if prefix else k, hints[k], v) for k, v in data.items()}
    if cls is RunConfig:
        kwargs["extra"] = extra
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) for TOML/JSON output and fingerprints; registered steps' sections
    (RunConfig.extra) are top-level sections like the others."""
    out = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name != "extra"}
    return out | {k: _plain(v) for k, v in getattr(cfg, "extra", {}).items()} if isinstance(cfg, RunConfig) else out


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
