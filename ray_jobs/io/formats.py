"""Per-format parsers: one input file -> a stream of canonical Arrow tables.

Each parser yields tables with `id`, `text`, `source`, `_offset`, `_error`, `_records` and the input's other
columns. A record that cannot be read (bad JSON, invalid UTF-8, a NUL byte in text, a text field that is not a
string, a CSV row with the wrong number of fields, a record over a size limit, a truncated tar member, an empty
file) becomes a row with `_error` set, so it lands in the quarantine with its file and offset while the rest of the
file goes on. Where the rest of a file cannot be read (a truncated or damaged compressed stream, a file over
input.max_decompressed_mb, an unreadable Parquet row group), the quarantine row says how many bytes, and records
when the file says, were not read. Ids are `<path relative to the input root>:<offset>` unless the record carries
its own id (a string, or an integer written in decimal), so they are stable across re-runs and unique across the
corpus. WARC / WET files are parsed in warc.py, on the same streams and rows.

Every read is streamed under the `input.*` limits: a line is never held past input.max_line_mb, a record past
input.max_record_mb, a file is not decompressed past input.max_decompressed_mb, a tar member past
input.max_member_mb.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

from ray_jobs import schema
from ray_jobs.config import InputConfig

ROWS_PER_TABLE = 2048  # small tables keep Ray blocks near the 4 MB target on typical web text
SNIPPET_CHARS = 2000  # how much of an unreadable record the quarantine keeps for a person to look at
MB = 1024 * 1024
CHUNK = MB  # bytes read at a time while skipping the rest of an over-long line: all a skip ever holds
# Compressed bytes fed to zstd per call. Its output has no cap per call, and a 4-byte RLE block expands to 128 KiB,
# so 128 bytes make at most 4 MiB (512 made 16 MiB, and a 24 MB line of one letter peaked at 30 MB); plain text
# (~4x) costs one call per ~500 bytes of output.
ZSTD_FEED = 128

SUFFIX_FORMATS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "text",
    ".tar": "webdataset",
    ".warc": "warc",  # .warc.gz too: the compression suffix is stripped first
    ".wet": "warc",  # Common Crawl's WET files: .warc.wet.gz
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


# --------------------------------------------------------------------------------------------- limits and streams


class _Lost(Exception):
    """The rest of a file cannot be read; `offset` is the first record not read, the message says why and the fix."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


def _over(what: str, n: int, key: str, mb: int) -> str:
    return (f"{what} is {n:,} bytes, over input.{key} = {mb} ({mb * MB:,} bytes); not read: raise input.{key} if "
            f"such {what}s are expected")


class _ZstdRaw(io.RawIOBase):
    """zstd frames (one or many, as `cat a.zst b.zst` or pzstd make them), decompressed in bounded steps.

    zstandard's stream_reader returns end-of-file at a cut inside a frame, without an error: a truncated .zst lost
    its records silently. Here a stream that ends inside a frame raises EOFError, as gzip does.
    """

    def __init__(self, raw: io.BufferedReader) -> None:
        self._raw, self._new = raw, zstandard.ZstdDecompressor().decompressobj
        self._dec = self._new()
        self._chunks: list[memoryview] = []  # decompressed, not yet given; served from the end
        self._in_frame = False  # bytes of the current frame were fed and its end not yet seen

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._chunks:
            data = self._raw.read(ZSTD_FEED)
            if not data:
                if self._in_frame:
                    raise EOFError("zstd stream ended inside a frame")
                return 0
            out = []
            while data:
                out.append(self._dec.decompress(data))
                if self._dec.eof:  # the frame ended; what follows it starts the next one
                    data, self._dec, self._in_frame = self._dec.unused_data, self._new(), False
                else:
                    data, self._in_frame = b"", True
            self._chunks = [memoryview(c) for c in reversed(out) if c]
        chunk = self._chunks.pop()
        n = min(len(b), len(chunk))
        b[:n] = chunk[:n]
        if n < len(chunk):
            self._chunks.append(chunk[n:])  # a view: the rest is not copied
        return n


class _Capped(io.RawIOBase):
    """The decompressed bytes of a file, counted, ending in `_Lost` once input.max_decompressed_mb is reached."""

    def __init__(self, inner: Any, limit: int) -> None:
        # readinto1 where there is one (gzip, a buffered file): one read of what is there. GzipFile.readinto fills the
        # whole buffer from several reads and drops what it had when one of them raises, so the records before a cut
        # in the last 64 KB of a truncated .gz were lost with it.
        self._readinto = getattr(inner, "readinto1", inner.readinto)
        self.limit, self.done, self.over = limit, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.over:
            raise _DecompressedLimit
        n = self._readinto(b)
        if self.done + n > self.limit:  # give what fits; the next read says the file goes on past the limit
            self.over, n = True, self.limit - self.done
            if not n:
                raise _DecompressedLimit
        self.done += n
        return n


class _DecompressedLimit(Exception):
    pass


# What a damaged or truncated stream raises (gzip.BadGzipFile is an OSError).
_STREAM_ERRORS = (EOFError, zlib.error, OSError, zstandard.ZstdError)


class Decompressed:
    """A file's bytes after gzip / zstd (or none), buffered, capped at input.max_decompressed_mb; it knows where
    it stopped, for the quarantine row of what could not be read."""

    def __init__(self, path: str, cfg: InputConfig) -> None:
        self.path, self.cfg = path, cfg
        self.raw = open(path, "rb")
        self.size = os.fstat(self.raw.fileno()).st_size
        lower = path.lower()
        self.kind = "gzip" if lower.endswith(".gz") else "zstd" if lower.endswith((".zst", ".zstd")) else ""
        inner: Any = (gzip.GzipFile(fileobj=self.raw) if self.kind == "gzip"
                      else _ZstdRaw(self.raw) if self.kind == "zstd" else self.raw)
        self.capped = _Capped(inner, cfg.max_decompressed_mb * MB)
        self.fh = io.BufferedReader(self.capped, 64 * 1024)

    def __enter__(self) -> Decompressed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()

    def lost(self, offset: int, where: str, e: BaseException) -> _Lost:
        """Why the rest of the file was not read, as the `_Lost` for the record at `offset`."""
        pos = self.raw.tell()
        read = f"{self.capped.done:,} decompressed bytes" if self.kind else f"{self.capped.done:,} bytes"
        if isinstance(e, _DecompressedLimit):
            mb = self.cfg.max_decompressed_mb
            return _Lost(offset, f"stopped {where}, at input.max_decompressed_mb = {mb} ({mb * MB:,} bytes) of "
                                 f"decompressed data from {pos:,} of the file's {self.size:,} bytes: the rest is not "
                                 f"read (its records unknown); raise input.max_decompressed_mb if the file is genuine "
                                 f"(a file that expands this far is usually a decompression bomb)")
        name = self.kind or "file"
        if isinstance(e, EOFError):
            return _Lost(offset, f"{name} stream ends early {where} ({read} read; {type(e).__name__}: {e}): the "
                                 f"file is truncated, the records after it are not in it; re-create or re-download it")
        return _Lost(offset, f"{name} stream is damaged {where} ({read} read; {type(e).__name__}: {e}): the rest, "
                             f"{self.size - pos:,} of {self.size:,} bytes of the file, is not read (its records "
                             f"unknown); re-create or re-download it")

    def lines(self, quote: bytes = b'"') -> Iterator[tuple[int, bytes, int, int]]:
        """(line number, line, its length in bytes, how many `quote` bytes it holds) for every line; a line over
        input.max_line_mb is not held: its first bytes come back (for the snippet) with its full length, the rest
        is read CHUNK by CHUNK and dropped. A UTF-8 byte-order mark before the first line is not part of it."""
        cap = self.cfg.max_line_mb * MB
        lineno = 0
        try:
            while line := self.fh.readline(cap + 1):
                lineno += 1
                if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                n, quotes = len(line), line.count(quote)
                if n > cap:
                    head = line[:SNIPPET_CHARS]
                    while not line.endswith(b"\n") and (line := self.fh.readline(CHUNK)):
                        n, quotes = n + len(line), quotes + line.count(quote)
                    line = head
                yield lineno, line, n, quotes
        except (*_STREAM_ERRORS, _DecompressedLimit) as e:
            raise self.lost(lineno + 1, f"after line {lineno}", e) from e


def _decode(raw: bytes, cfg: InputConfig, what: str, nul: bool = True) -> tuple[str | None, str | None]:
    """The text of one record's bytes, or why it has none: over input.max_record_mb, a NUL byte (`nul`: binary data
    in a text format), invalid UTF-8."""
    if len(raw) > cfg.max_record_mb * MB:
        return None, _over("record", len(raw), "max_record_mb", cfg.max_record_mb)
    if nul and (at := raw.find(b"\x00")) >= 0:
        return None, (f"NUL byte at byte {at} of the {what}: binary data, not text; remove the NUL bytes or the "
                      f"file if it is not text")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start} of the {what}; re-encode the file as UTF-8"


# --------------------------------------------------------------------------------------------- rows


def record_problem(record: dict[str, Any], cfg: InputConfig) -> str | None:
    """Why a parsed record cannot be a row, or None: its text is not a string (a list, a number, an object is
    never turned into its Python repr), is over input.max_record_mb, or its id has no single string form."""
    text, rid = record.get(cfg.text_column), record.get(cfg.id_column)
    if text is not None and not isinstance(text, str):
        return (f"{cfg.text_column!r} is {type(text).__name__} ({_short(text)}), expected a string; fix the record "
                f"or set input.text_column to the field that holds the text")
    if text is not None and len(text) * 4 > cfg.max_record_mb * MB and len(n := text.encode()) > cfg.max_record_mb * MB:
        return _over("record", len(n), "max_record_mb", cfg.max_record_mb)
    # 42 and "42" are one id (dedup then sets both rows aside as duplicate_id); a float (1.0 or "1"?), a bool
    # ("True" or "true"?), a list or an object has no one string form that every format would agree on
    if rid is not None and (isinstance(rid, bool) or not isinstance(rid, (str, int))):
        return (f"{cfg.id_column!r} is {type(rid).__name__} ({_short(rid)}), expected a string or an integer; fix "
                f"the id, or set input.id_column to the field that holds ids")
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class _TableBuilder:
    """Accumulates canonical rows and emits Arrow tables of ROWS_PER_TABLE rows."""

    def __init__(self, unit: FileUnit) -> None:
        self.unit = unit
        self.origin = unit.relpath  # the id prefix and `source` of its rows
        self.rows: list[dict[str, Any]] = []

    def good(self, offset: int, record: dict[str, Any], cfg: InputConfig, raw: bytes | str | None = None) -> None:
        """A parsed record: a row, or a quarantine row when `record_problem` says why it cannot be one."""
        problem = record_problem(record, cfg)
        if problem is None:
            self.rows.append(canonical_row(record, cfg, self.origin, offset))
        else:
            self.bad(offset, problem, raw if raw is not None else _short(record.get(cfg.text_column)))

    def bad(self, offset: int, error: str, raw: bytes | str | None = None, locator: str | None = None,
            columns: dict[str, Any] | None = None) -> None:
        """A quarantine row; its id is `<origin>:<locator>` (default: the offset), like a good row's would be;
        `columns`: what else is known of the record (a WARC record's URL), kept on the row."""
        snippet = raw[:SNIPPET_CHARS * 4].decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        self.rows.append({
            schema.ID: f"{self.origin}:{offset if locator is None else locator}",
            schema.TEXT: snippet[:SNIPPET_CHARS] if snippet else None,
            schema.SOURCE: self.origin,
            schema.OFFSET: offset,
            schema.ERROR: f"{self.unit.path} @ {offset}: {error}",
            **(columns or {}),
        })

    def flush(self, final: bool = False) -> Iterator[pa.Table]:
        if self.rows and (final or len(self.rows) >= ROWS_PER_TABLE):
            yield canonical_table(self.rows)
            self.rows = []


def canonical_row(record: dict[str, Any], cfg: InputConfig, origin: str, offset: int) -> dict[str, Any]:
    """One input record (checked by `record_problem`) -> a canonical row; the id defaults to `<origin>:<offset>`,
    the source to `origin`."""
    record = dict(record)
    text = record.pop(cfg.text_column, None)
    rid = record.pop(cfg.id_column, None)
    row = {k: v for k, v in record.items() if k not in schema.RESERVED}
    row[schema.ID] = str(rid) if rid is not None else f"{origin}:{offset}"
    row[schema.TEXT] = text
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
    with Decompressed(unit.path, cfg) as src:
        for lineno, raw, n, _ in src.lines():
            if n > cfg.max_line_mb * MB:
                out.bad(lineno, _over("line", n, "max_line_mb", cfg.max_line_mb), raw)
            elif raw.strip():
                line, problem = _decode(raw, cfg, "line", nul=False)  # a raw NUL is malformed JSON anyway
                if line is None:
                    out.bad(lineno, str(problem), raw)
                else:
                    _json_record(lineno, line, raw, cfg, out)
            yield from out.flush()


def _json_record(lineno: int, line: str, raw: bytes, cfg: InputConfig, out: _TableBuilder) -> None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        out.bad(lineno, f"malformed JSON ({e.msg} at column {e.colno}); expected one object per line", raw)
        return
    if not isinstance(rec, dict):
        out.bad(lineno, f"expected a JSON object per line, found {type(rec).__name__}", raw)
    elif cfg.text_column not in (rec := with_chat_text(rec, cfg)):
        out.bad(lineno, _missing_text(list(rec), cfg), raw)
    else:
        out.good(lineno, rec, cfg, raw)


def _csv_records(src: Decompressed, cfg: InputConfig) -> Iterator[tuple[int, int, bytes, str | None]]:
    """(first line, last line, bytes, why it cannot be read or None) of every CSV record: lines are joined until
    their quotes pair up (RFC 4180 doubles a quote inside a quoted field, so an even count closes the record). A
    record over input.max_record_mb, or with a line over input.max_line_mb, is not held: its lines are only
    counted, so it is one quarantine row and the record after it starts where it should."""
    parts: list[bytes] = []
    first = size = quotes = long_line = 0
    for lineno, raw, n, q in src.lines():
        if not first:
            first, head = lineno, raw[:SNIPPET_CHARS]  # what the quarantine shows of a record too large to hold
        size, quotes = size + n, quotes + q
        if n > cfg.max_line_mb * MB:
            long_line = max(long_line, n)
        if not long_line and size <= cfg.max_record_mb * MB:
            parts.append(raw)
        if quotes % 2 == 0:
            problem = _csv_size_problem(size, long_line, cfg)
            yield first, lineno, b"".join(parts) if problem is None else head, problem
            parts, first, size, quotes, long_line = [], 0, 0, 0, 0
    if first:
        yield first, first, b"".join(parts) or head, (
            f"the file ends inside a quoted field opened on line {first}: the file is truncated or a quote is not "
            f"closed; fix or re-create the file")


def _csv_size_problem(size: int, long_line: int, cfg: InputConfig) -> str | None:
    if long_line:
        return _over("line", long_line, "max_line_mb", cfg.max_line_mb)
    return _over("record", size, "max_record_mb", cfg.max_record_mb) if size > cfg.max_record_mb * MB else None


def _records_csv(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    delimiter = "\t" if unit.path.lower().endswith((".tsv", ".tsv.gz", ".tsv.zst")) else cfg.csv_delimiter
    # csv's own field limit (131,072 characters) made a long field fail every row after it; records are bounded by
    # input.max_record_mb before they reach the parser, so its limit only has to let them through
    csv.field_size_limit(max(csv.field_size_limit(), cfg.max_record_mb * MB))
    header: list[str] | None = None
    with Decompressed(unit.path, cfg) as src:
        for first, last, raw, problem in _csv_records(src, cfg):
            snippet = raw.rstrip(b"\r\n")
            if problem is None and not raw.strip():
                continue
            text = None
            if problem is None:
                text, problem = _decode(raw, cfg, "record")
            if header is None:  # the first record names the columns: without them no record can be read
                if problem is None:
                    header = _csv_fields(str(text), delimiter)
                if problem is not None or header is None:
                    out.bad(last, f"CSV header unreadable ({problem or 'not one record'}); the file's columns are "
                                  f"unknown, so none of its records is read: fix the header line", snippet)
                    break
                if cfg.text_column not in header:
                    out.bad(1, f"CSV header has no {cfg.text_column!r} column (found {header}); set input.text_column")
                    break
                continue
            values = None if problem is not None else _csv_fields(str(text), delimiter)
            if problem is not None:
                out.bad(last, problem, snippet)
            elif values is None:
                out.bad(last, f"malformed CSV on lines {first}-{last}: their quotes pair up as one record but it "
                              f"parses as several (a quote inside an unquoted field?); quote such fields as RFC 4180 "
                              f"says", snippet)
            elif not any(values):
                continue
            elif len(values) != len(header):
                out.bad(last, f"expected {len(header)} fields ({', '.join(header)}), found {len(values)}", snippet)
            else:
                out.good(last, dict(zip(header, values)), cfg, snippet)
            yield from out.flush()


def _csv_fields(text: str, delimiter: str) -> list[str] | None:
    """The fields of one CSV record, or None when the text is not exactly one record."""
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def _records_text(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    with Decompressed(unit.path, cfg) as src:
        if cfg.text_mode == "file":
            _whole_file(src, cfg, out)
        else:
            for lineno, raw, n, _ in src.lines():
                if n > cfg.max_line_mb * MB:
                    out.bad(lineno, _over("line", n, "max_line_mb", cfg.max_line_mb), raw)
                elif raw.strip():
                    text, problem = _decode(raw.rstrip(b"\r\n"), cfg, "line")
                    if text is None:
                        out.bad(lineno, str(problem), raw)
                    else:
                        out.good(lineno, {cfg.text_column: text}, cfg, raw)
                yield from out.flush()


def _whole_file(src: Decompressed, cfg: InputConfig, out: _TableBuilder) -> None:
    """text_mode = "file": the file is one record, read up to input.max_record_mb and only counted past it."""
    cap = cfg.max_record_mb * MB
    try:
        raw = src.fh.read(cap + 1)
        n = len(raw)
        if n > cap:
            while chunk := src.fh.read(CHUNK):
                n += len(chunk)
    except (*_STREAM_ERRORS, _DecompressedLimit) as e:
        raise src.lost(0, "in the file", e) from e
    text, problem = _decode(raw, cfg, "file") if n <= cap else (None, _over("record", n, "max_record_mb",
                                                                             cfg.max_record_mb))
    if text is None:
        out.bad(0, str(problem), raw)
    else:
        out.good(0, {cfg.text_column: text}, cfg, raw)


def _is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)


def _records_parquet(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    pf = pq.ParquetFile(unit.path)
    names = pf.schema_arrow.names
    chat = cfg.text_column not in names and (
        cfg.messages_column in names or {cfg.instruction_column, cfg.response_column} <= set(names))
    if cfg.text_column not in names and not chat:
        out.bad(0, "Parquet file has " + _missing_text(names, cfg, "column"))
        return
    start = 0
    for g in range(pf.metadata.num_row_groups):
        group_start, end = start, start + pf.metadata.row_group(g).num_rows
        try:
            for batch in pf.iter_batches(batch_size=ROWS_PER_TABLE, row_groups=[g]):
                t, offsets = _valid_rows(pa.Table.from_batches([batch]), start, out)
                if chat:  # conversations: few and short next to web text, so row by row is fine
                    yield from _dict_rows(t.to_pylist(), offsets.to_pylist(), cfg, out)
                else:
                    yield from _parquet_rows(t, offsets, cfg, out)
                start += batch.num_rows
        except Exception as e:  # noqa: BLE001 - a damaged row group: each of its rows not read is quarantined
            for i in range(start, end):
                out.bad(i, f"row group {g} (rows {group_start}-{end - 1}, {end - group_start} records) unreadable "
                           f"({type(e).__name__}: {e}); re-create the file (its other row groups are read)")
                yield from out.flush()
            start = end


def _valid_rows(t: pa.Table, start: int, out: _TableBuilder) -> tuple[pa.Table, pa.Array]:
    """The batch without the rows whose values Arrow finds invalid (invalid UTF-8 in a string column: damaged
    bytes that the Parquet reader passes on, and that fail whoever reads the row next), each a quarantine row;
    with the offsets of the rows kept."""
    offsets = pa.array(range(start, start + t.num_rows), pa.int64())
    try:
        t.validate(full=True)  # UTF-8 of every string, ~1 GB/s: cheap next to what reads the rows after
        return t, offsets
    except pa.ArrowInvalid:
        problems = [_invalid(t.slice(i, 1)) for i in range(t.num_rows)]
    for i, problem in zip(offsets.to_pylist(), problems):
        if problem is not None:
            out.bad(i, f"invalid value in this row ({problem}): the file's data is damaged; re-create or "
                       f"re-download it")
    keep = pa.array([p is None for p in problems])
    return t.filter(keep), offsets.filter(keep)


def _invalid(row: pa.Table) -> str | None:
    try:
        row.validate(full=True)
    except pa.ArrowInvalid as e:
        return str(e)
    return None


def _parquet_rows(t: pa.Table, offsets: pa.Array, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    """One Parquet batch as canonical columns; rows whose text is over input.max_record_mb are quarantined, and a
    batch whose text or id column has a type no row can use (a list, a float id) goes row by row, each row
    quarantined with its type named (`record_problem`)."""
    names = t.column_names
    ids = t[cfg.id_column] if cfg.id_column in names else None
    if not _is_text_type(t[cfg.text_column].type) or not (
            ids is None or _is_text_type(ids.type) or pa.types.is_integer(ids.type)):
        yield from _dict_rows(t.to_pylist(), offsets.to_pylist(), cfg, out)
        return
    text = t[cfg.text_column].cast(pa.string())
    over = pc.fill_null(pc.greater(pc.binary_length(text), cfg.max_record_mb * MB), False)
    if pc.any(over).as_py():
        for i, value in zip(offsets.filter(over).to_pylist(), text.filter(over).to_pylist()):
            out.bad(i, _over("record", len(value.encode()), "max_record_mb", cfg.max_record_mb), value)
        keep = pc.invert(over)
        t, offsets, text = t.filter(keep), offsets.filter(keep), text.filter(keep)
        ids = t[cfg.id_column] if ids is not None else None
    n = t.num_rows
    default_ids = pa.array([f"{out.origin}:{i}" for i in offsets.to_pylist()], pa.string())
    cols: dict[str, Any] = {
        schema.ID: default_ids if ids is None else pc.coalesce(ids.cast(pa.string()), default_ids),
        schema.TEXT: text,
        schema.SOURCE: (t[schema.SOURCE].cast(pa.string()) if schema.SOURCE in names
                        else pa.array([out.origin] * n, pa.string())),
        schema.OFFSET: offsets,
        schema.ERROR: pa.nulls(n, pa.string()),
    }
    for c in names:
        if c not in (cfg.text_column, cfg.id_column) and c not in schema.RESERVED:
            cols[c] = t[c]
    if n:
        yield pa.table(cols)


def _dict_rows(records: list[dict[str, Any]], offsets: Iterable[int], cfg: InputConfig,
               out: _TableBuilder) -> Iterator[pa.Table]:
    """Records as dicts (Parquet conversations or odd types, HF rows) -> rows or quarantine rows, row by row."""
    for i, rec in zip(offsets, records):
        rec = with_chat_text(rec, cfg)
        if cfg.text_column not in rec:
            out.bad(i, _missing_text(list(rec), cfg))
        else:
            out.good(i, rec, cfg)
        yield from out.flush()


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
                text, problem = _decode(parts["txt"], cfg, f"{key}.txt member")
                if text is None:
                    raise ValueError(problem)
                meta[cfg.text_column] = text
            if cfg.text_column not in meta:
                raise ValueError(f"sample {key!r} has no .txt member and no {cfg.text_column!r} in its .json "
                                 f"(members: {sorted(parts)})")
        except (UnicodeDecodeError, ValueError) as e:
            out.bad(index, f"sample {key!r}: {e}", parts.get("txt") or parts.get("json"), locator=key)
        else:
            meta.setdefault(cfg.id_column, f"{unit.relpath}:{key}")
            out.good(index, meta, cfg, parts.get("txt") or parts.get("json"))
        index += 1

    with Decompressed(unit.path, cfg) as src:
        try:
            with tarfile.open(fileobj=src.fh, mode="r|*") as tar:
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
                    if member.size > cfg.max_member_mb * MB:
                        oversized.append(f"member {member.name} is {member.size / 1e6:,.0f} MB,")
                        continue  # a streamed tar skips the unread bytes when it moves to the next member
                    fh = tar.extractfile(member)
                    assert fh is not None
                    data = fh.read()
                    if len(data) != member.size:
                        raise tarfile.ReadError(f"member {member.name} truncated: {len(data)} of {member.size} bytes")
                    parts[ext.lower()] = data
                emit()
                unread = _unread_after(tar)
            if unread:
                out.bad(index, f"tar stream stops at an invalid header at byte {tar.offset:,}: the {unread:,} bytes "
                               f"after it are not read (the samples in them unknown); re-create the shard (e.g. "
                               f"re-download or re-pack)")
        except tarfile.TarError as e:
            out.bad(index, f"tar shard unreadable from sample {key!r} on ({e}); the rest of this shard is lost "
                           f"({src.capped.done:,} bytes read): re-create it (e.g. re-download or re-pack)", locator=key)
        except (*_STREAM_ERRORS, _DecompressedLimit) as e:
            out.bad(index, str(src.lost(index, f"in sample {key!r}", e)), locator=key)
    yield from out.flush(final=True)


def _unread_after(tar: tarfile.TarFile) -> int:
    """How many bytes follow the header where a streamed tar stopped, when any of them is not zero; 0 when only the
    end-of-archive blocks (zeros) follow. tarfile ends its iteration at an invalid header without an error, so a
    damaged header in the middle of a shard would otherwise lose every sample after it without a trace."""
    stream: Any = tar.fileobj
    n, nonzero = stream.pos - tar.offset, False
    while chunk := stream.read(CHUNK):
        n += len(chunk)
        nonzero = nonzero or chunk.count(0) != len(chunk)
    return n if nonzero else 0


# Our format name -> the `datasets` packaged builder that reads a single local file of it.
HF_BUILDERS = {"jsonl": "json", "csv": "csv", "parquet": "parquet", "text": "text", "webdataset": "webdataset"}


def is_hf_folder(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in ("state.json", "dataset_dict.json"))


def _records_hf(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    """An HF `datasets` input (save_to_disk folder, local data files or folder, or a hub id); ids are
    `<name>:<split>:<row>`. One read task streams the whole dataset (Arrow memory-mapped, so memory stays flat)."""
    import datasets

    spec, p = unit.path, Path(unit.path)
    if is_hf_folder(p):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.hf_split not in ds:
                raise _Lost(-1, f"no split {cfg.hf_split!r} in {spec} (splits: {', '.join(sorted(ds))}); set "
                                f"input.hf_split to one of them")
            ds = ds[cfg.hf_split]
    elif p.is_file():
        # load_dataset(<file>) only searches folders ("Couldn't find any data file"): name the packaged builder.
        builder = HF_BUILDERS.get(detect_format(p) or "")
        if builder is None:
            raise _Lost(-1, f"cannot read {spec} with HF datasets: expected a file ending in "
                            f"{', '.join(sorted(ext for ext, f in SUFFIX_FORMATS.items() if f in HF_BUILDERS))}")
        sep = {"delimiter": "\t"} if builder == "csv" and ".tsv" in [s.lower() for s in p.suffixes] else {}
        ds = datasets.load_dataset(builder, data_files={cfg.hf_split: str(p)}, split=cfg.hf_split, **sep)
    else:
        ds = datasets.load_dataset(spec, split=cfg.hf_split)  # a folder of data files or a hub id
    out.origin = f"{p.name if p.exists() else spec}:{cfg.hf_split}"
    arrow = ds.with_format("arrow")
    for start in range(0, len(ds), ROWS_PER_TABLE):
        chunk = arrow[start:start + ROWS_PER_TABLE].to_pylist()
        yield from _dict_rows(chunk, range(start, start + len(chunk)), cfg, out)


def _records_warc(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    # imported on first use: ray_jobs/io/warc.py builds on this module (and loads fastwarc, resiliparse)
    from ray_jobs.io.warc import records_warc

    return records_warc(unit, cfg, out)


PARSERS = {
    "jsonl": _records_jsonl,
    "csv": _records_csv,
    "text": _records_text,
    "parquet": _records_parquet,
    "webdataset": _records_webdataset,
    "hf": _records_hf,
    "warc": _records_warc,
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
    """Every record of one file as canonical tables, the last row carrying `_records`; nothing in the file can make
    this raise."""
    tables = _counted(_parse_file(unit, cfg))
    hive = hive_values(unit.relpath)
    return _with_hive(tables, hive) if hive else tables


def _counted(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """The tables with schema.RECORDS after the core columns: null, and on the last row the number of rows given."""
    total, held = 0, None
    for t in tables:
        if not len(t):
            continue
        if held is not None:
            yield held.add_column(5, schema.RECORDS, pa.nulls(len(held), pa.int64()))
        total, held = total + len(t), t
    if held is not None:
        yield held.add_column(5, schema.RECORDS, pa.array([None] * (len(held) - 1) + [total], pa.int64()))


def _parse_file(unit: FileUnit, cfg: InputConfig) -> Iterator[pa.Table]:
    out = _TableBuilder(unit)
    try:
        if unit.fmt != "hf" and os.path.getsize(unit.path) == 0:
            out.bad(0, "file is empty (0 bytes); remove it or re-create it")
        else:
            yield from PARSERS[unit.fmt](unit, cfg, out)
    except _Lost as e:
        out.bad(e.offset, str(e))
    except Exception as e:  # noqa: BLE001 - a broken file is quarantined, never the end of the job
        out.bad(-1, f"unreadable as {unit.fmt}: {type(e).__name__}: {e}; {_not_read(unit)}")
    yield from out.flush(final=True)


def _not_read(unit: FileUnit) -> str:
    if unit.fmt == "hf":
        return "none of it is read: re-create it with datasets' save_to_disk (or check input.hf_split)"
    return (f"the file's {os.path.getsize(unit.path):,} bytes are not read from here on (its records unknown): "
            f"re-create or re-download it")
