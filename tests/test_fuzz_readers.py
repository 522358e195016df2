"""Fuzz suite for the text readers (issue 14): seeded corruptions of the committed sample through parse_file.

The records are the sample's own (shards/sample/parquet/part-00000.parquet: real ids and texts, 45 of the first 48
with newlines in them), its real WebDataset shard and its WARC sample; each example writes them in one format,
damages some of them (invalid UTF-8, a NUL byte, a text field of the wrong type, broken JSON, a wrong field count, a
huge line, a member over its limit) or the whole file (truncated, bytes flipped), adds a BOM or duplicate ids, and
reads it back.

The property, checked exactly where a record boundary exists:
- nothing raises;
- every intact record comes out as one row with its id and text unchanged, at its offset;
- every damaged record is its own quarantine row at its offset (one per record, never one for a run of them);
- the rows (read and quarantined) add up to the reader's own count (`_records`, what stats sums into rows_in).

Hypothesis is seeded (`derandomize=True`) and has no deadline, so a run is the same every time and on any machine;
60 examples a test keep the whole module to ~20 s on 2 cores.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import PARQUET, SAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_jobs.config import InputConfig
from ray_jobs.io.formats import FileUnit, detect_format, parse_file
from ray_jobs.schema import RECORDS

MB = 1024 * 1024
N = 40  # records per example: enough for runs of damaged neighbours, small enough for ~10 ms a parse
LIMITS = {"max_line_mb": 1, "max_record_mb": 1, "max_member_mb": 1}  # so a "huge" record costs ~1 MB, not 64
FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=60,
                suppress_health_check=list(HealthCheck))

COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "": bytes,
    ".gz": lambda b: gzip.compress(b, mtime=0),
    # with a content checksum, as the zstd CLI writes by default: damage inside a frame is then detected
    ".zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


@functools.cache
def sample_records() -> tuple[tuple[str, str], ...]:
    t = pq.read_table(PARQUET / "part-00000.parquet", columns=["id", "text"]).slice(0, N)
    return tuple(zip(t["id"].to_pylist(), t["text"].to_pylist()))


def read(path: Path, **kw) -> list[dict]:
    """Every row parse_file gives for one file, with the accounting checked: `_records` is null on every row but
    the last, which holds the number of rows."""
    unit = FileUnit(str(path), f"fz/{path.name}", detect_format(path) or "")
    rows = [r for t in parse_file(unit, InputConfig(paths=(str(path),), **kw)) for r in t.to_pylist()]
    counts = [r.pop(RECORDS) for r in rows]
    assert counts == [None] * (len(rows) - 1) + [len(rows)], counts[-3:]
    for r in rows:
        assert r["text"] is None or isinstance(r["text"], str)
        assert r["_error"] is None or r["_error"].startswith(f"{path} @ {r['_offset']}: "), r["_error"]
    return rows


def check(rows: list[dict], intact: dict[int, tuple[str, str]], damaged: set[int]) -> None:
    """Exact: intact records (offset -> (id, text)) as rows, damaged ones (offsets) as one quarantine row each."""
    got = {r["_offset"]: (r["id"], r["text"]) for r in rows if r["_error"] is None}
    assert got == intact
    quarantined = [r["_offset"] for r in rows if r["_error"] is not None]
    assert sorted(quarantined) == sorted(damaged), [r["_error"] for r in rows if r["_error"] is not None][:3]
    assert len(rows) == len(intact) + len(damaged)


# ------------------------------------------------------------------------------ damage to single records

def _inside(encoded: bytes, marker: bytes, insert: bytes) -> bytes:
    """`insert` placed a few bytes into the text (after `marker`, its opening)."""
    at = encoded.index(marker) + len(marker) + 3
    return encoded[:at] + insert + encoded[at:]


def jsonl_record(rid: str, text: str, damage: str) -> bytes:
    rec: dict = {"id": rid, "text": text}
    if damage == "type":
        rec["text"] = [text]
    elif damage == "huge":
        rec["text"] = text + " pad" * (MB // 4)
    line = json.dumps(rec, ensure_ascii=False).encode()
    if damage == "utf8":
        line = _inside(line, b'"text": "', b"\xff")
    elif damage == "nul":
        line = _inside(line, b'"text": "', b"\x00")
    elif damage == "json":
        line = line[:-1]
    return line + b"\n"


def csv_record(rid: str, text: str, damage: str) -> bytes:
    buf = io.StringIO()
    fields = [rid, text + " pad" * (MB // 4) if damage == "huge" else text] + (["extra"] if damage == "fields" else [])
    csv.writer(buf, lineterminator="\n").writerow(fields)
    data = buf.getvalue().encode()
    if damage in ("utf8", "nul"):
        data = _inside(data, f"{rid},".encode(), b"\xff" if damage == "utf8" else b"\x00")
    return data


def text_record(text: str, damage: str) -> bytes:
    line = (text + " pad" * (MB // 4) if damage == "huge" else text).encode()
    if damage in ("utf8", "nul"):
        line = line[:3] + (b"\xff" if damage == "utf8" else b"\x00") + line[3:]
    return line + b"\n"


DAMAGE = {"jsonl": ("utf8", "nul", "type", "json"), "csv": ("utf8", "nul", "fields"), "text": ("utf8", "nul")}


@st.composite
def damage_plans(draw, fmt: str) -> dict:
    kinds = draw(st.lists(st.sampled_from(("ok",) * 4 + DAMAGE[fmt]), min_size=N, max_size=N))
    huge = draw(st.none() | st.integers(0, N - 1))  # at most one ~1 MB record per example: a 1 MB line costs ~5 ms
    if huge is not None:
        kinds[huge] = "huge"
    return {"kinds": kinds, "bom": draw(st.booleans()), "blank": draw(st.sets(st.integers(0, N - 1), max_size=4)),
            "dup": draw(st.sets(st.integers(1, N - 1), max_size=4))}


def _line_file(fmt: str, plan: dict) -> tuple[bytes, dict[int, tuple[str, str]], set[int]]:
    """The file's bytes, the intact records by offset and the damaged offsets. Offsets: the line number (JSONL,
    text) or the last line of the record (CSV, as csv's line_num counts)."""
    records = list(sample_records())
    for i in plan["dup"]:
        records[i] = (records[i - 1][0], records[i][1])  # a repeated id is not damage: both rows come out
    data, line = b"", 0
    intact: dict[int, tuple[str, str]] = {}
    damaged: set[int] = set()
    if fmt == "csv":
        data, line = b"id,text\n", 1
    for i, ((rid, text), kind) in enumerate(zip(records, plan["kinds"])):
        if i in plan["blank"]:
            data, line = data + b"\n", line + 1  # a blank line is no record
        if fmt == "text":
            text = text.splitlines()[0].strip() or "x"
            rid = None
        chunk = {"jsonl": lambda: jsonl_record(rid, text, kind), "csv": lambda: csv_record(rid, text, kind),
                 "text": lambda: text_record(text, kind)}[fmt]()
        data, line = data + chunk, line + chunk.count(b"\n")
        if kind == "ok":
            intact[line] = (rid or f"fz/{{name}}:{line}", text)
        else:
            damaged.add(line)
    if plan["bom"]:
        data = b"\xef\xbb\xbf" + data
    return data, intact, damaged


@pytest.mark.parametrize("fmt,suffix", [("jsonl", ".jsonl"), ("jsonl", ".jsonl.gz"), ("jsonl", ".jsonl.zst"),
                                        ("csv", ".csv"), ("csv", ".csv.zst"), ("text", ".txt"), ("text", ".txt.gz")])
def test_each_damaged_record_is_its_own_quarantine_row(fmt, suffix):
    @FUZZ
    @given(plan=damage_plans(fmt))
    def run(plan):
        data, intact, damaged = _line_file(fmt, plan)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"f{suffix}"
            path.write_bytes(COMPRESS[suffix[suffix.rindex("."):] if suffix.endswith((".gz", ".zst")) else ""](data))
            rows = read(path, **LIMITS)
        check(rows, {k: (rid.replace("{name}", path.name), t) for k, (rid, t) in intact.items()}, damaged)

    run()


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@FUZZ
@given(kinds=st.lists(st.sampled_from(("ok",) * 4 + ("utf8", "json", "type", "notext")), min_size=N, max_size=N),
       huge=st.none() | st.integers(0, N - 1))
def test_each_damaged_webdataset_sample_is_its_own_quarantine_row(kinds, huge):
    members, intact, damaged = [], {}, set()
    for i, ((rid, text), kind) in enumerate(zip(sample_records(), kinds)):
        key = f"s{i:03d}"
        txt, meta = text.encode(), json.dumps({"id": rid}).encode()
        if i == huge:
            kind, txt = "huge", txt * (MB // len(txt) + 1)
        if kind == "utf8":
            txt = txt[:2] + b"\xff" + txt[2:]
        elif kind == "json":
            meta = meta[:-1]
        elif kind == "type":
            meta, txt = json.dumps({"id": rid, "text": 7}).encode(), b""
        members += [(f"{key}.json", meta)] + ([(f"{key}.txt", txt)] if kind not in ("type", "notext") else [])
        if kind == "ok":
            intact[i] = (rid, text)
        else:
            damaged.add(i)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.tar"
        path.write_bytes(_tar(members))
        check(read(path, **LIMITS), intact, damaged)


@FUZZ
@given(huge=st.sets(st.integers(0, N - 1), max_size=2), nulls=st.sets(st.integers(0, N - 1), max_size=3),
       group=st.integers(1, N))
def test_parquet_records_over_the_limit_and_nulls(huge, nulls, group):
    ids, texts = map(list, zip(*sample_records()))
    for i in huge:
        texts[i] = texts[i] * (MB // len(texts[i]) + 1)
    for i in nulls - huge:
        texts[i] = None  # a null text is a record with no text (clean drops it as empty), not damage
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.parquet"
        pq.write_table(pa.table({"id": ids, "text": texts}), path, row_group_size=group)
        intact = {i: (ids[i], texts[i]) for i in range(N) if i not in huge}
        check(read(path, **LIMITS), intact, set(huge))


# ------------------------------------------------------------------------------ damage to whole files

def _sample_file(kind: str) -> tuple[bytes, str, list[tuple[str, str]]]:
    """The bytes of a real sample file in `kind`'s format, its suffix, and its records (id, text) in order."""
    records = list(sample_records())
    if kind == "parquet":
        path = PARQUET / "part-00000.parquet"
        t = pq.read_table(path, columns=["id", "text"])
        return path.read_bytes(), ".parquet", list(zip(t["id"].to_pylist(), t["text"].to_pylist()))
    if kind == "tar":
        path = SAMPLE / "webdataset" / "shard-00000.tar"
        with tarfile.open(path) as tar:
            names = [m.name for m in tar.getmembers() if m.name.endswith(".json")]
            metas = [json.loads(tar.extractfile(n).read()) for n in names]  # type: ignore[union-attr]
            texts = [tar.extractfile(n[:-5] + ".txt").read().decode() for n in names]  # type: ignore[union-attr]
        return path.read_bytes(), ".tar", [(m["id"], t) for m, t in zip(metas, texts)]
    fmt, _, comp = kind.partition(".")
    encode = {"jsonl": lambda r: jsonl_record(r[0], r[1], "ok"), "csv": lambda r: csv_record(r[0], r[1], "ok")}[fmt]
    head = b"id,text\n" if fmt == "csv" else b""
    return (COMPRESS["." + comp if comp else ""](head + b"".join(encode(r) for r in records)),
            f".{kind}", records)


WHOLE = ["jsonl", "jsonl.gz", "jsonl.zst", "csv", "csv.gz", "tar", "parquet"]


@pytest.mark.parametrize("kind", WHOLE)
def test_a_truncated_file_keeps_the_records_before_the_cut(kind):
    data, suffix, records = _sample_file(kind)

    @FUZZ
    @given(cut=st.integers(1, len(data) - 1))
    def run(cut):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"f{suffix}"
            path.write_bytes(data[:cut])
            rows = read(path)
        good = [(r["id"], r["text"]) for r in rows if r["_error"] is None]
        bad = [r for r in rows if r["_error"] is not None]
        if kind == "parquet":  # the footer is at the end: nothing can be read, and the loss is said in bytes
            assert not good and len(bad) == 1 and f"{cut:,} bytes" in bad[0]["_error"], bad
            return
        # Two losses no reader can see, both in the last record before the cut: plain CSV cut inside an unquoted
        # field leaves a shorter well-formed record (a file without a final newline is normal), and a tar cut at
        # the header of a sample's .json member leaves the sample with its .txt alone (its id then the default)
        whole = good[:-1] if kind in ("csv", "tar") and good and good[-1] not in records else good
        assert whole == records[:len(whole)], "rows before the cut must be the file's first records, unchanged"
        if len(whole) < len(good):
            (rid, text), (orig_id, orig_text) = good[-1], records[len(whole)]
            assert orig_text.startswith(text) and (rid == orig_id or kind == "tar"), (good[-1], records[len(whole)])
        assert len(bad) <= 1
        if kind.endswith((".gz", ".zst")) or kind == "tar":
            assert len(bad) == 1 or kind == "tar", "a truncated compressed stream always says so"
        for q in bad:
            assert any(w in q["_error"] for w in (  # the cut record, in whatever way the cut broke it
                "ends early", "malformed JSON", "invalid UTF-8", "expected 2 fields", "ends inside a quoted field",
                "CSV header", "tar shard unreadable", "not read")), q["_error"]

    run()


@pytest.mark.parametrize("kind", WHOLE)
def test_flipped_bytes_never_raise_and_lines_untouched_come_out_unchanged(kind):
    data, suffix, records = _sample_file(kind)

    @FUZZ
    @given(flips=st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=3))
    def run(flips):
        damaged = bytearray(data)
        for at, xor in flips:
            damaged[at] ^= xor
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"f{suffix}"
            path.write_bytes(bytes(damaged))
            rows = read(path)
        first = min(at for at, _ in flips)
        good = [(r["id"], r["text"]) for r in rows if r["_error"] is None]
        if kind == "jsonl":  # every non-blank line is one row, and an untouched line is read as written
            lines = bytes(damaged).split(b"\n")
            originals = {ln: json.loads(ln) for ln in data.split(b"\n") if ln}
            by_offset = {r["_offset"]: r for r in rows}
            assert sorted(by_offset) == [k for k, ln in enumerate(lines, 1) if ln.strip()]
            for k, ln in enumerate(lines, 1):
                if ln in originals:
                    r = by_offset[k]
                    assert (r["id"], r["text"], r["_error"]) == (originals[ln]["id"], originals[ln]["text"], None)
        elif kind == "tar":  # samples whose members lie wholly before the first flip are read unchanged
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                ends = [m.offset_data + m.size for m in tar.getmembers() if m.name.endswith(".json")]
            before = sum(1 for end in ends if end <= first)
            assert good[:before] == records[:before]
        elif kind.endswith((".gz", ".zst")) and not any(r["_error"] for r in rows):
            # a compressed stream with a checksum (gzip's CRC-32, zstd's content checksum) reports damage
            assert good == records

    run()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "text"])
def test_utf8_byte_order_mark_and_invalid_utf8_at_the_start(fmt):
    """A BOM is not part of the first record; an invalid byte where a BOM would be damages that record only."""
    data, intact, damaged = _line_file(fmt, {"kinds": ["ok"] * N, "bom": True, "blank": set(), "dup": set()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f.{ {'text': 'txt'}.get(fmt, fmt) }"
        path.write_bytes(data)
        check(read(path), {k: (rid.replace("{name}", path.name), t) for k, (rid, t) in intact.items()}, damaged)
        path.write_bytes(b"\xfe" + data[3:])
        rows = read(path)
    first = min(intact)
    if fmt == "csv":  # the header is the damaged line: the file has no usable header, one row says so
        assert len(rows) == 1 and "invalid UTF-8" in rows[0]["_error"], rows[0]["_error"]
    else:
        check(rows, {k: (rid.replace("{name}", path.name), t) for k, (rid, t) in intact.items() if k != first},
              {first})


# ------------------------------------------------------------------------------ WARC

WARC_SAMPLE = SAMPLE / "warc" / "creativecommons-0000.warc.gz"


@FUZZ
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 255)), max_size=4),
       gz=st.booleans())
def test_damaged_warc_never_raises_and_accounts_for_every_record(cut, flips, gz):
    """The committed WARC sample, cut anywhere and with bytes flipped, plain or gzipped: nothing raises, every row
    is counted, and every response that lies whole before the first damaged byte comes out with its text."""
    raw = gzip.decompress(WARC_SAMPLE.read_bytes())
    with tempfile.TemporaryDirectory() as d:
        intact = {r["_offset"]: (r["id"], r["text"]) for r in read(_write(Path(d), "intact.warc", raw))}
        data = bytearray(raw[:int(len(raw) * cut)])
        for where, xor in flips:
            if data:
                data[int(where * (len(data) - 1))] ^= xor
        first_damage = min([int(w * (len(data) - 1)) for w, _ in flips] + [len(data)]) if data else 0
        damaged = _write(Path(d), "damaged.warc" + (".gz" if gz else ""),
                         gzip.compress(bytes(data), mtime=0) if gz else bytes(data))
        # a file cut inside its first record's header can hold no record at all: zero rows, nothing to count
        rows = read(damaged) if any(parse_file(FileUnit(str(damaged), "fz/x", "warc"), InputConfig())) else []
    got = {r["_offset"]: (r["id"], r["text"]) for r in rows if r["_error"] is None}
    starts = sorted(intact)
    whole = [o for o, nxt in zip(starts, starts[1:]) if nxt <= first_damage]  # it ends before the damage
    assert {o: got.get(o) for o in whole} == {o: intact[o] for o in whole}
    assert len({r["_offset"] for r in rows}) == len(rows)  # one row per record: none read twice


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path
