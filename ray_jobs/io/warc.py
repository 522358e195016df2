"""WARC / WET input: one row per HTTP `response` record (its main text) or WET `conversion` record (its text).

Rows carry `url`, `warc_date`, `content_type` and `http_status` (null for WET); the id is the WARC-Record-ID
(`urn:uuid:...`), unique and stable by the WARC standard, and `_offset` is the record's byte position in the
decompressed file. `request`, `metadata`, `warcinfo`, `resource` and `revisit` records are not documents and are
skipped by the parser, so they are neither rows nor errors.

A response that is not a document becomes one quarantine row saying why, with its URL and offset: a payload type
outside input.warc_content_types (images, PDFs, JSON), an HTTP status outside 2xx (redirects, errors), a payload the
crawler cut (WARC-Truncated) or the file ends inside, a body over input.max_record_mb, an undecodable transfer or
content encoding, or no text after extraction. A damaged or truncated .warc.gz keeps the records before the damage
and one quarantine row says how much of the file was not read (formats.Decompressed, as for JSONL).

The bytes are decoded with the HTTP header's charset, else the HTML meta charset, else resiliparse's detection
(uchardet); bytes invalid in that charset fall back to UTF-8 / Windows-1252 and are never an error.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import zstandard
from fastwarc.warc import ArchiveIterator, WarcRecord, WarcRecordType
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from ray_jobs.config import InputConfig
from ray_jobs.io.formats import MB, Decompressed, FileUnit, _DecompressedLimit, _over, _TableBuilder

HTML_TYPES = ("text/html", "application/xhtml+xml")
# What our decompression raises at a truncated, damaged or over-limit stream (fastwarc passes a Python stream's
# errors on unchanged); a plain OSError comes from fastwarc itself: bytes that are not a WARC record.
_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, zstandard.ZstdError, _DecompressedLimit)
SNIFF_BYTES = 1024  # a response without a type is HTML when these first bytes hold <html or <!doctype


class _Stream(io.RawIOBase):
    """The decompressed file as fastwarc reads it. Each read gives what one read of the stream gives (read1): with
    BufferedReader.read(n), the bytes gathered for a read were dropped when a later part of it raised, so a .warc.gz
    cut anywhere in its first 64 KB gave no record at all. Its tell() is the one position fastwarc asks for (where
    the stream starts): RawIOBase's own would seek, which a decompressing stream cannot."""

    def __init__(self, fh: io.BufferedReader) -> None:
        self._fh, self._pos = fh, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto1(b)
        self._pos += n
        return n


def _resiliparse(html: str) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    # alt_texts off: image descriptions ("Headshot", "Three people sitting in an office") were the most common
    # boilerplate resiliparse kept and trafilatura did not on the sample pages
    return extract_plain_text(HTMLTree.parse(html), main_content=True, alt_texts=False)


def _trafilatura(html: str) -> str:
    import trafilatura

    # deduplicate off: trafilatura's dedup is a cache shared across documents, so a page's text would depend on
    # which pages the same process read before it (and a re-run or another block layout would change rows)
    return trafilatura.extract(html, include_comments=False, deduplicate=False) or ""


EXTRACTORS: dict[str, Callable[[str], str]] = {"resiliparse": _resiliparse, "trafilatura": _trafilatura}


def records_warc(unit: FileUnit, cfg: InputConfig, out: _TableBuilder) -> Iterator[pa.Table]:
    """The rows of one .warc / .warc.gz / .wet[.gz] file (formats.PARSERS["warc"])."""
    extract = EXTRACTORS[cfg.warc_extractor]
    types = tuple(t.lower() for t in cfg.warc_content_types)
    last = -1  # byte offset of the last record seen
    with Decompressed(unit.path, cfg) as src:
        records = ArchiveIterator(_Stream(src.fh), record_types=WarcRecordType.response | WarcRecordType.conversion,
                                  parse_http=True, auto_decode="all", stream_detect=False)
        try:
            for rec in records:
                last = rec.stream_pos
                _record(rec, src, cfg, types, extract, out)
                yield from out.flush()
        except _STREAM_ERRORS as e:
            after = f"after the record at byte {last:,}" if last >= 0 else "before the first record"
            lost = src.lost(src.capped.done, after, e)
            out.bad(lost.offset, str(lost))
        except OSError as e:  # fastwarc: what follows is not a WARC record
            where = (f"after the record at byte {last:,}" if last >= 0
                     else "at the start: no WARC record could be read (is it a WARC file? expected a 'WARC/1.0' line)")
            out.bad(src.capped.done, f"invalid WARC data {where} ({e}); no record after it is read (reading stopped "
                                     f"at decompressed byte {src.capped.done:,}; the records after the damage are "
                                     f"unknown): re-create or re-download the file")
    yield from out.flush(final=True)


def _record(rec: WarcRecord, src: Decompressed, cfg: InputConfig, types: tuple[str, ...],
            extract: Callable[[str], str], out: _TableBuilder) -> None:
    """One response / conversion record -> a row, or a quarantine row that says why not."""
    offset, headers = rec.stream_pos, rec.headers
    url = (headers.get("WARC-Target-URI") or "").strip("<>")  # WARC/1.0 writers (wget) put it in <...>
    wet = rec.record_type == WarcRecordType.conversion
    status = None if wet or not rec.is_http else rec.http_headers.status_code
    mime = (headers.get("WARC-Identified-Payload-Type") or (headers.get("Content-Type") if wet else
                                                            rec.http_content_type) or "").lower()
    what = f"{'conversion' if wet else 'response'} for {url or 'no URL'}"
    columns = {"url": url, "warc_date": headers.get("WARC-Date"), "content_type": mime or None, "http_status": status}

    def bad(why: str, raw: bytes | None = None) -> None:
        out.bad(offset, f"{what}: {why}", raw, columns=columns)

    if status is not None and not 200 <= status < 300:
        return bad(f"HTTP status {status}, not a page (a redirect or an error); nothing to read")
    if not wet and mime and mime not in types:
        return bad(f"payload type {mime!r} is not in input.warc_content_types ({', '.join(types)}); add it if such "
                   f"records hold text")
    if headers.get("WARC-Truncated"):
        return bad(f"the crawler cut this payload (WARC-Truncated: {headers.get('WARC-Truncated')}): its page is "
                   f"incomplete")
    if rec.content_length > cfg.max_record_mb * MB:
        return bad(_over("record", rec.content_length, "max_record_mb", cfg.max_record_mb))
    try:
        body = rec.reader.read()
    except _STREAM_ERRORS:
        raise
    except OSError as e:  # a chunked or gzip body fastwarc cannot decode
        return bad(f"payload undecodable ({e}); the record is damaged")
    if src.capped.done < _least_end(rec):
        return bad(f"the file ends inside this record ({len(body):,} of {rec.content_length:,} payload bytes): it "
                   f"is truncated; re-create or re-download the file", body)
    if not wet and not mime and not _looks_html(body):
        return bad("no payload type and the payload does not start like HTML; set WARC-Identified-Payload-Type or "
                   "the HTTP Content-Type")
    html = not wet and (mime in HTML_TYPES or not mime)
    text = _decoded(body, "utf-8" if wet else rec.http_charset)
    if html:
        try:
            text = extract(text)
        except Exception as e:  # noqa: BLE001 - one page the extractor cannot parse is one quarantine row
            return bad(f"{cfg.warc_extractor} could not extract this page ({type(e).__name__}: {e}); try "
                       f"input.warc_extractor = the other extractor", body)
    if not text.strip():
        return bad(f"no text after {'HTML extraction' if html else 'decoding'} ({len(body):,} payload bytes): a "
                   f"page of scripts, images or frames only", body)
    record = {cfg.text_column: text, **columns}
    if rec.record_id:
        record[cfg.id_column] = rec.record_id.strip("<>")
    out.good(offset, record, cfg, body)
    return None


def _least_end(rec: WarcRecord) -> int:
    """The least byte position a whole record reaches: its header lines at their shortest (`Name:value` and LF,
    where writers put `Name: value` and CRLF) plus its block (WARC Content-Length). A file that stops before it
    ends inside the record; a cut within the few bytes this leaves out passes unseen."""
    headers = rec.headers
    lines = [headers.status_line_bytes, *(k + b":" + v for k, v in headers.items_bytes())]
    length = headers.get("Content-Length") or ""
    return rec.stream_pos + sum(len(line) + 1 for line in lines) + 1 + (int(length) if length.isdigit() else 0)


def _looks_html(body: bytes) -> bool:
    head = body[:SNIFF_BYTES].lower()
    return b"<html" in head or b"<!doctype html" in head


def _decoded(body: bytes, charset: str | None) -> str:
    """The payload as text: the declared charset, else the HTML meta charset or uchardet's guess; an unknown label
    or bytes invalid in it fall back to UTF-8, then Windows-1252 (which maps every byte but five), then replacement
    characters."""
    encoding = charset or detect_encoding(body, from_html_meta=True)
    try:
        return bytes_to_str(body, encoding, errors="replace")
    except (LookupError, UnicodeError):  # a charset label Python does not know ("utf8mb4", "x-user-defined")
        return bytes_to_str(body, detect_encoding(body, from_html_meta=True), errors="replace")
