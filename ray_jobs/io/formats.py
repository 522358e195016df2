"""Per-format parsers: one input file -> a stream of canonical Arrow tables.

Each parser yields tables with `id`, `text`, `source`, `_offset`, `_error` and the input's other columns.
A record that cannot be read (bad JSON, invalid UTF-8, a CSV row with the wrong number of fields, a truncated
tar member, an empty file) becomes a row with `_error` set, so it lands in the quarantine with its file and
offset while the rest of the file goes on. Ids are `<path relative to the input root>:<offset>` unless the
record carries its own id, so they are stable across re-runs and unique across the corpus.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ray_jobs import schema
from ray_jobs.config import InputConfig

ROWS_PER_TABLE = 2048  # small tables keep Ray blocks near the 4 MB target on typical web text
SNIPPET_CHARS = 2000  # how much of an unreadable record the quarantine keeps for a person to look at

SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "text",
    ".tar": "webdataset",
}


@dataclass(frozen=True)
class FileUnit:
    path: str
    relpath: str  # relative to the input root it was found under: the id prefix and the `source`
    fmt: str


def detect_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".zst", ".zstd"):
        suffixes = suffixes[:-1]
    return SUFFIX_FORMATS.get(suffixes[-1]) if suffixes else None


def _open_decompressed(path: str) -> BinaryIO:
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        # The raw reader cannot iterate lines (io.UnsupportedOperation): buffer it. read_across_frames: files made
        # by `cat a.zst b.zst` or pzstd hold several frames, and the default stops after the first one.
        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(raw)  # type: ignore[arg-type]
    return open(path, "rb")


class _TableBuilder:
    """Accumulates canonical rows and emits Arrow tables of ROWS_PER_TABLE rows."""

    def __init__(self, unit: FileUnit) -> None:
        self.unit = unit
        self.rows: list[dict[str, Any]] = []

    def good(self, offset: int, record: dict[str, Any], cfg: InputConfig) -> None:
        self.rows.append(canonical_row(record, cfg, self.unit.relpath, offset))

    def bad(self, offset: int, error: str, raw: bytes | str | None = None, locator: str | None = None) -> None:
        """A quarantine row; its id is `<relpath>:<locator>` (default: the offset), like a good row's would be."""
        snippet = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        self.rows.append({
            schema.ID: f"{self.unit.relpath}:{offset if locator is None else locator}",
            schema.TEXT: snippet[:SNIPPET_CHARS] if snippet else None,
            schema.SOURCE: self.unit.relpath,
            schema.OFFSET: offset,
            schema.ERROR: f"{self.unit.path} @ {offset}: {error}",
        })

    def flush(self, final: bool = False) -> Iterator[pa.Table]:
        if self.rows and (final or len(self.rows) >= ROWS_PER_TABLE):
            yield canonical_table(self.rows)
            self.rows = []


def canonical_row(record: dict[str, Any], cfg: InputConfig, origin: str, offset: int) -> dict[str, Any]:
    """One input record -> a canonical row; the id defaults to `<origin>:<offset>`, the source to `origin`."""
    record = dict(record)
    text = record.pop(cfg.text_column, None)
    rid = record.pop(cfg.id_column, None)
    row = {k: v for k, v in record.items() if k not in schema.RESERVED}
    row[schema.ID] = str(rid) if rid is not None else f"{origin}:{offset}"
    row[schema.TEXT] = text if text is None or isinstance(text, str) else str(text)
    row[schema.SOURCE] = str(record.get(schema.SOURCE) or origin)
    row[schema.OFFSET] = offset
    row[schema.ERROR] = None
    return row


def with_chat_text(rec: dict[str, Any], cfg: InputConfig) -> dict[str, Any]:
    """A record without the text column but with a conversation gets one: `messages` ([{role, content}]) or an
    instruction/response pair (made into `messages`, JSON) gives `text` = the contents joined by blank lines,
    which cleaning and dedup read; the tokenize stage renders `messages` through the chat template."""
    if cfg.text_column in rec:
        return rec
    msgs = rec.get(cfg.messages_column)
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            return rec
    if msgs is None and cfg.instruction_column in rec and cfg.response_column in rec:
        msgs = [{"role": "user", "content": rec.pop(cfg.instruction_column)},
                {"role": "assistant", "content": rec.pop(cfg.response_column)}]
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        return rec
    rec = {k: v for k, v in rec.items() if k != cfg.messages_column}
    rec[schema.MESSAGES] = json.dumps(msgs, ensure_ascii=False)
    rec[cfg.text_column] = "\n\n".join(str(m.get("content") or "") for m in msgs)
    return rec


def _missing_text(found: list[str], cfg: InputConfig, what: str = "field") -> str:
    return (f"no {cfg.text_column!r} {what} and no conversation ({cfg.messages_column!r}, or "
            f"{cfg.instruction_column!r} "
            f"+ {cfg.response_column!r}) (found {sorted(found)[:10]}); set input.text_column or input.messages_column")


def canonical_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> table with the core columns first and typed, nested values as JSON strings."""
    for row in rows:
        for k, v in row.items():
            if isinstance(v, (dict, list)):
                row[k] = json.dumps(v, ensure_ascii=False, sort_keys=True)
    # Column by column over the union of keys: Table.from_pylist takes its schema from the first row only, so a
    # quarantined first row dropped every other column, and one field with mixed types raised for the whole file.
    table = pa.table({k: _column([row.get(k) for row in rows]) for k in dict.fromkeys(k for r in rows for k in r)})
    core = [(f.name, f.type) for f in schema.CORE_FIELDS] + [(schema.OFFSET, pa.int64()), (schema.ERROR, pa.string())]
    cols = [table[name].cast(tp) if name in table.column_names else pa.nulls(len(table), tp) for name, tp in core]
    extra = [c for c in table.column_names if c not in {n for n, _ in core}]
    return pa.table(cols + [table[c] for c in extra], names=[n for n, _ in core] + extra)


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. 1 in one record, "x" in the next: keep both as text
        return pa.array([None if v is None else str(v) for v in values], pa.string())


# --------------------------------------------------------------------------------------------- formats


def _records_jsonl(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    with _open_decompressed(unit.path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                out.bad(lineno, f"invalid UTF-8 at byte {e.start} of the line; re-encode the file as UTF-8", raw)
            else:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    out.bad(lineno, f"malformed JSON ({e.msg} at column {e.colno}); expected one object per line", raw)
                else:
                    if not isinstance(rec, dict):
                        out.bad(lineno, f"expected a JSON object per line, found {type(rec).__name__}", raw)
                    elif cfg.text_column not in (rec := with_chat_text(rec, cfg)):
                        out.bad(lineno, _missing_text(list(rec), cfg), raw)
                    else:
                        out.good(lineno, rec, cfg)
            yield from out.flush()


def _records_csv(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    delimiter = "\t" if unit.path.lower().endswith((".tsv", ".tsv.gz", ".tsv.zst")) else cfg.csv_delimiter
    with _open_decompressed(unit.path) as fh:
        # surrogateescape keeps invalid bytes visible per record instead of failing the whole file
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") would otherwise rename the first header field
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.reader(text, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        if cfg.text_column not in header:
            out.bad(1, f"CSV header has no {cfg.text_column!r} column (found {header}); set input.text_column")
            yield from out.flush(final=True)
            return
        for values in reader:
            lineno = reader.line_num
            if not any(values):
                continue
            joined = delimiter.join(values)
            if len(values) != len(header):
                out.bad(lineno, f"expected {len(header)} fields ({', '.join(header)}), found {len(values)}",
                        joined.encode("utf-8", "surrogateescape"))
            elif any("\udc80" <= ch <= "\udcff" for ch in joined):
                out.bad(lineno, "invalid UTF-8 in this row; re-encode the file as UTF-8",
                        joined.encode("utf-8", "surrogateescape"))
            else:
                out.good(lineno, dict(zip(header, values)), cfg)
            yield from out.flush()


def _records_text(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    with _open_decompressed(unit.path) as fh:
        if cfg.text_mode == "file":
            raw = fh.read()
            try:
                out.good(0, {cfg.text_column: raw.decode("utf-8")}, cfg)
            except UnicodeDecodeError as e:
                out.bad(0, f"invalid UTF-8 at byte {e.start}; re-encode the file as UTF-8", raw)
            yield from out.flush(final=True)
            return
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                out.good(lineno, {cfg.text_column: raw.decode("utf-8").rstrip("\r\n")}, cfg)
            except UnicodeDecodeError as e:
                out.bad(lineno, f"invalid UTF-8 at byte {e.start} of the line; re-encode the file as UTF-8", raw)
            yield from out.flush()


def _records_parquet(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(unit.path)
    names = pf.schema_arrow.names
    chat = cfg.text_column not in names and (
        cfg.messages_column in names or {cfg.instruction_column, cfg.response_column} <= set(names))
    if cfg.text_column not in names and not chat:
        out.bad(0, "Parquet file has " + _missing_text(names, cfg, "column"))
        yield from out.flush(final=True)
        return
    start = 0
    for batch in pf.iter_batches(batch_size=ROWS_PER_TABLE):
        t = pa.Table.from_batches([batch])
        if chat:  # conversations: few and short next to web text, so row by row is fine
            t = pa.Table.from_pylist([with_chat_text(r, cfg) for r in t.to_pylist()])
            if cfg.text_column not in t.column_names:
                raise ValueError(f"{unit.relpath} has " + _missing_text(names, cfg, "column"))
            names = t.column_names
        n = t.num_rows
        offsets = pa.array(range(start, start + n), pa.int64())
        cols: dict[str, pa.Array] = {}
        text = t[cfg.text_column]
        cols[schema.ID] = (
            t[cfg.id_column].cast(pa.string()) if cfg.id_column in names
            else pa.array([f"{unit.relpath}:{i}" for i in range(start, start + n)], pa.string())
        )
        cols[schema.TEXT] = text if pa.types.is_string(text.type) else text.cast(pa.string())
        cols[schema.SOURCE] = (t[schema.SOURCE].cast(pa.string()) if schema.SOURCE in names
                               else pa.array([unit.relpath] * n, pa.string()))
        cols[schema.OFFSET] = offsets
        cols[schema.ERROR] = pa.nulls(n, pa.string())
        for c in names:
            if c not in (cfg.text_column, cfg.id_column) and c not in schema.RESERVED:
                cols[c] = t[c]
        start += n
        yield pa.table(cols)


def _records_webdataset(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    """WebDataset: consecutive members sharing a key (name up to the first dot) form one sample."""
    index = 0
    key: str | None = None
    parts: dict[str, bytes] = {}
    oversized: list[str] = []  # members of the current sample skipped for their size

    def emit() -> None:
        nonlocal index
        if key is None:
            return
        meta: dict[str, Any] = {}
        try:
            if oversized:
                raise ValueError(f"{', '.join(oversized)} over input.max_member_mb = {cfg.max_member_mb}; not read "
                                 f"(raise the limit if such members are expected)")
            if "json" in parts:
                try:
                    meta = json.loads(parts["json"].decode("utf-8"))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{key}.json is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                                     f"expected a JSON object") from e
                if not isinstance(meta, dict):
                    raise ValueError(f"expected a JSON object in {key}.json, found {type(meta).__name__}")
            if "txt" in parts:
                meta[cfg.text_column] = parts["txt"].decode("utf-8")
            if cfg.text_column not in meta:
                raise ValueError(f"sample {key!r} has no .txt member and no {cfg.text_column!r} in its .json "
                                 f"(members: {sorted(parts)})")
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            out.bad(index, f"sample {key!r}: {e}", parts.get("txt") or parts.get("json"), locator=key)
        else:
            meta.setdefault(cfg.id_column, f"{unit.relpath}:{key}")
            out.good(index, meta, cfg)
        index += 1

    try:
        with tarfile.open(unit.path, "r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                k, _, ext = base.partition(".")
                if k != key:
                    emit()
                    yield from out.flush()
                    key, parts, oversized = k, {}, []
                # Names are only keys: nothing is extracted to disk, so `../` in a member name reaches no path.
                if member.size > cfg.max_member_mb * 1024 * 1024:
                    oversized.append(f"member {member.name} is {member.size / 1e6:,.0f} MB,")
                    continue  # a streamed tar skips the unread bytes when it moves to the next member
                fh = tar.extractfile(member)
                assert fh is not None
                data = fh.read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} truncated: {len(data)} of {member.size} bytes")
                parts[ext.lower()] = data
        emit()
    except (tarfile.TarError, EOFError, OSError) as e:
        out.bad(index, f"tar shard unreadable from sample {key!r} on ({e}); the rest of this shard is lost: "
                       f"re-create it (e.g. re-download or re-pack)", locator=key)
    yield from out.flush(final=True)


PARSERS = {
    "jsonl": _records_jsonl,
    "csv": _records_csv,
    "text": _records_text,
    "parquet": _records_parquet,
    "webdataset": _records_webdataset,
}


def hive_values(relpath: str) -> dict[str, str]:
    """`split=train/part-0.parquet` -> {"split": "train"}: partition folders written by a stage become columns
    again (reserved bookkeeping columns such as `status` are set anew by the next stage, so they are skipped)."""
    parts = (p.split("=", 1) for p in relpath.split("/")[:-1] if "=" in p)
    return {k: v for k, v in parts if k not in schema.RESERVED}


def _with_hive(tables: Iterator[pa.Table], values: dict[str, str]) -> Iterator[pa.Table]:
    for t in tables:
        for k, v in values.items():
            if k not in t.column_names:
                t = t.append_column(k, pa.array([v] * len(t), pa.string()))
        yield t


def parse_file(unit: FileUnit, cfg: InputConfig) -> Iterator[pa.Table]:
    """Every record of one file as canonical tables; nothing in the file can make this raise."""
    hive = hive_values(unit.relpath)
    if hive:
        yield from _with_hive(_parse_file(unit, cfg), hive)
    else:
        yield from _parse_file(unit, cfg)


def _parse_file(unit: FileUnit, cfg: InputConfig) -> Iterator[pa.Table]:
    out = _TableBuilder(unit)
    path = Path(unit.path)
    try:
        if path.stat().st_size == 0:
            out.bad(0, "file is empty (0 bytes); remove it or re-create it")
        else:
            yield from PARSERS[unit.fmt](unit, cfg, out)
    except Exception as e:  # noqa: BLE001 - a broken file is quarantined, never the end of the job
        out.bad(-1, f"unreadable as {unit.fmt}: {type(e).__name__}: {e}")
    yield from out.flush(final=True)
