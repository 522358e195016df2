"""Tests for ray_jobs.io (formats.parse_file, readers.discover / hf_tables / from_records) and config errors.

Fast and hermetic: every input is a real file written into tmp_path, read without starting Ray. Each format must
give the canonical schema; every unreadable record must become one quarantine row (file, offset, what was
expected) while the good records of the same file are still read.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from ray_jobs.config import InputConfig, load_config
from ray_jobs.errors import UserError
from ray_jobs.io.formats import FileUnit, hive_values, parse_file
from ray_jobs.io.readers import discover, from_records
from ray_jobs.schema import RECORDS

CORE = ["id", "text", "source", "_offset", "_error"]
CORE_TYPES = [pa.string(), pa.string(), pa.string(), pa.int64(), pa.string()]


def parsed(unit: FileUnit, cfg: InputConfig) -> list[pa.Table]:
    """parse_file's tables for one file, checked: the canonical columns first, and `_records` (the reader's count
    of what it saw, which stats sums into the first step's rows_in) null on every row but the file's last, which
    holds the number of rows read; returned without `_records`, which the other tests need not spell out."""
    tables = list(parse_file(unit, cfg))
    for t in tables:
        assert t.column_names[:6] == CORE + [RECORDS], t.column_names
        assert [t.schema.field(c).type for c in CORE + [RECORDS]] == CORE_TYPES + [pa.int64()]
    counts = [n for t in tables for n in t[RECORDS].to_pylist()]
    assert counts == [None] * (len(counts) - 1) + [len(counts)], f"{unit.path}: _records {counts[-3:]}"
    return [t.drop_columns([RECORDS]) for t in tables]


def read_tables(path: Path | str, **kw) -> list[pa.Table]:
    cfg = InputConfig(paths=(str(path),), **kw)
    return [t for unit in discover(cfg) for t in parsed(unit, cfg)]


def read_rows(path: Path | str, **kw) -> list[dict]:
    return [r for t in read_tables(path, **kw) for r in t.to_pylist()]


def good(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["_error"] is None]


def bad(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["_error"] is not None]


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


JSONL = (b'{"text": "first doc", "lang": "en", "meta": {"url": "http://a", "n": [1, 2]}}\n'
         b'\n'
         b'{"text": "second doc", "id": 42, "lang": "de"}\n')


def _check_jsonl_rows(rows: list[dict], rel: str) -> None:
    assert [r["id"] for r in rows] == [f"{rel}:1", "42"]  # blank line 2 skipped; a record's own id wins
    assert [r["text"] for r in rows] == ["first doc", "second doc"]
    assert [r["_offset"] for r in rows] == [1, 3]
    assert [r["source"] for r in rows] == [rel, rel]
    assert [r["lang"] for r in rows] == ["en", "de"]
    assert json.loads(rows[0]["meta"]) == {"url": "http://a", "n": [1, 2]}  # nested values as JSON text
    assert rows[1]["meta"] is None
    assert all(r["_error"] is None for r in rows)


# ------------------------------------------------------------------------------------------- formats


def test_parquet_without_id_column(tmp_path):
    pq.write_table(pa.table({"text": ["alpha", "beta"], "lang": ["en", "fr"], "n": [3, 4]}),
                   write(tmp_path / "pq" / "part.parquet", b""))
    (t,) = read_tables(tmp_path / "pq")
    assert t.column_names == CORE + ["lang", "n"]
    assert t.schema.field("n").type == pa.int64()
    assert t.to_pylist() == [
        {"id": "pq/part.parquet:0", "text": "alpha", "source": "pq/part.parquet", "_offset": 0, "_error": None,
         "lang": "en", "n": 3},
        {"id": "pq/part.parquet:1", "text": "beta", "source": "pq/part.parquet", "_offset": 1, "_error": None,
         "lang": "fr", "n": 4},
    ]


def test_parquet_with_id_column(tmp_path):
    f = tmp_path / "pq" / "part.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"id": [10, 11], "text": ["alpha", "beta"]}), f)
    rows = read_rows(f)
    assert [r["id"] for r in rows] == ["10", "11"]  # cast to string
    assert [r["_offset"] for r in rows] == [0, 1]
    assert list(rows[0]) == CORE


def test_parquet_non_default_text_column(tmp_path):
    f = tmp_path / "pq" / "part.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"body": ["alpha", "beta"], "title": ["A", "B"]}), f)
    (t,) = read_tables(f, text_column="body")
    assert t.column_names == CORE + ["title"]  # `body` became `text`
    assert t["text"].to_pylist() == ["alpha", "beta"]
    assert t["title"].to_pylist() == ["A", "B"]


def test_jsonl_plain(tmp_path):
    f = write(tmp_path / "j" / "docs.jsonl", JSONL)
    _check_jsonl_rows(read_rows(f), "j/docs.jsonl")


@pytest.mark.parametrize("suffix,compress", [
    (".jsonl.gz", gzip.compress),
    (".jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    # two concatenated frames (`cat a.zst b.zst`, pzstd), split inside a line: both must be read, not only the first
    (".jsonl.zst", lambda b: b"".join(zstandard.ZstdCompressor().compress(p) for p in (b[:30], b[30:]))),
])
def test_jsonl_compressed(tmp_path, suffix, compress):
    f = write(tmp_path / "j" / f"docs{suffix}", compress(JSONL))
    _check_jsonl_rows(read_rows(f), f"j/docs{suffix}")


def test_csv_keeps_extra_columns(tmp_path):
    f = write(tmp_path / "c" / "docs.csv",
              'text,lang,score\n"hello, world",en,1\n"two\nlines",de,2\n')
    rows = read_rows(f)
    assert rows == [
        {"id": "c/docs.csv:2", "text": "hello, world", "source": "c/docs.csv", "_offset": 2, "_error": None,
         "lang": "en", "score": "1"},
        {"id": "c/docs.csv:4", "text": "two\nlines", "source": "c/docs.csv", "_offset": 4, "_error": None,
         "lang": "de", "score": "2"},
    ]


def test_csv_with_byte_order_mark(tmp_path):
    f = write(tmp_path / "c" / "excel.csv", b"\xef\xbb\xbftext,lang\nhi there,en\n")
    rows = read_rows(f)
    assert [(r["text"], r["lang"], r["_error"]) for r in rows] == [("hi there", "en", None)]


def test_tsv(tmp_path):
    f = write(tmp_path / "c" / "docs.tsv", "text\tlang\na, b\ten\n")
    assert [(r["text"], r["lang"]) for r in read_rows(f)] == [("a, b", "en")]


def test_text_line_mode(tmp_path):
    f = write(tmp_path / "t" / "lines.txt", b"one\n\ntwo\r\nthree")
    rows = read_rows(f)
    assert [(r["id"], r["text"], r["_offset"]) for r in rows] == [
        ("t/lines.txt:1", "one", 1), ("t/lines.txt:3", "two", 3), ("t/lines.txt:4", "three", 4)]
    assert [list(r) for r in rows] == [CORE] * 3


def test_text_file_mode(tmp_path):
    write(tmp_path / "t" / "a.txt", "para one\n\npara two\n")
    write(tmp_path / "t" / "b.txt", "other")
    rows = read_rows(tmp_path / "t", text_mode="file")
    assert [(r["id"], r["text"], r["_offset"]) for r in rows] == [
        ("t/a.txt:0", "para one\n\npara two\n", 0), ("t/b.txt:0", "other", 0)]


def test_webdataset_tar(tmp_path):
    f = make_tar(tmp_path / "w" / "shard.tar", [
        ("docs/a.txt", b"text of a"), ("docs/a.json", b'{"lang": "en", "url": "http://a"}'),
        ("docs/b.jpg", b"\xff\xd8 not text"), ("docs/b.txt", "text of b \u00e9".encode()),
        ("docs/c.json", b'{"text": "text of c from json", "id": "c-own-id"}'),
    ])
    rows = read_rows(f)
    assert rows == [
        {"id": "w/shard.tar:a", "text": "text of a", "source": "w/shard.tar", "_offset": 0, "_error": None,
         "lang": "en", "url": "http://a"},
        {"id": "w/shard.tar:b", "text": "text of b \u00e9", "source": "w/shard.tar", "_offset": 1, "_error": None,
         "lang": None, "url": None},
        {"id": "c-own-id", "text": "text of c from json", "source": "w/shard.tar", "_offset": 2, "_error": None,
         "lang": None, "url": None},
    ]


@pytest.mark.shared_data
def test_webdataset_real_shard(shared_data):  # conftest: Path(__file__).resolve().parents[1].parent/shared/data
    folder = shared_data / "webdataset_sample_nemo_curator"
    if not (folder / "00000.tar").is_file():
        pytest.skip(f"{folder}/00000.tar absent: this copy of ../shared/data lacks the WebDataset sample")
    units = discover(InputConfig(paths=(str(folder),)))
    assert [(u.relpath, u.fmt) for u in units] == [("webdataset_sample_nemo_curator/00000.tar", "webdataset")]
    rows = read_rows(folder)  # 0.jpg + 0.json {"id", "caption"} + 0.txt; the .idx file is not an input
    caption = "A wine bottle outfitted with two forks in its cork and a duck head on top."
    assert rows == [{"id": "0", "text": caption, "source": "webdataset_sample_nemo_curator/00000.tar",
                     "_offset": 0, "_error": None, "caption": caption}]


@pytest.fixture()
def hf_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # keep ~/.cache clean
    return datasets


def _hf_rows(cfg: InputConfig) -> tuple[list[FileUnit], list[dict]]:
    units = discover(cfg)
    rows = [r for u in units for t in parsed(u, cfg) for r in t.to_pylist()]
    return units, rows


def test_hf_save_to_disk(tmp_path, hf_cache):
    hf_cache.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]}).save_to_disk(str(tmp_path / "saved"))
    units, rows = _hf_rows(InputConfig(paths=(str(tmp_path / "saved"),)))  # format auto spots the HF folder
    assert [(u.relpath, u.fmt) for u in units] == [("saved", "hf")]
    assert rows == [
        {"id": "saved:train:0", "text": "x", "source": "saved:train", "_offset": 0, "_error": None, "label": 0},
        {"id": "saved:train:1", "text": "y", "source": "saved:train", "_offset": 1, "_error": None, "label": 1},
    ]


def test_hf_dataset_dict_split(tmp_path, hf_cache):
    dd = hf_cache.DatasetDict({"train": hf_cache.Dataset.from_dict({"text": ["tr"]}),
                               "test": hf_cache.Dataset.from_dict({"text": ["te1", "te2"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    _, rows = _hf_rows(InputConfig(paths=(str(tmp_path / "dd"),), hf_split="test"))
    assert [(r["id"], r["text"]) for r in rows] == [("dd:test:0", "te1"), ("dd:test:1", "te2")]


def test_hf_local_json_file(tmp_path, hf_cache):
    f = write(tmp_path / "local.jsonl", '{"text": "p", "n": 1}\n{"text": "q", "n": 2}\n')
    units, rows = _hf_rows(InputConfig(format="hf", paths=(str(f),)))
    assert [(u.relpath, u.fmt) for u in units] == [("local.jsonl", "hf")]
    assert [(r["id"], r["text"], r["n"], r["_error"]) for r in rows] == [
        ("local.jsonl:train:0", "p", 1, None), ("local.jsonl:train:1", "q", 2, None)]


def test_hf_local_csv_file_and_folder(tmp_path, hf_cache):
    f = write(tmp_path / "local.csv", "text,n\np,1\nq,2\n")
    _, rows = _hf_rows(InputConfig(format="hf", paths=(str(f),)))
    assert [(r["id"], r["text"], r["n"]) for r in rows] == [
        ("local.csv:train:0", "p", 1), ("local.csv:train:1", "q", 2)]
    write(tmp_path / "folder" / "part.jsonl", '{"text": "r"}\n')
    _, rows = _hf_rows(InputConfig(format="hf", paths=(str(tmp_path / "folder"),)))
    assert [(r["id"], r["text"]) for r in rows] == [("folder:train:0", "r")]


def test_from_records_strings_and_dicts():
    cfg = InputConfig()
    t = from_records(["plain", None, {"text": "d", "id": "own", "lang": "en", "tags": ["a"]}], cfg, prefix="p")
    assert t.column_names == CORE + ["lang", "tags"]
    assert t.to_pylist() == [
        {"id": "p:0", "text": "plain", "source": "p", "_offset": 0, "_error": None, "lang": None, "tags": None},
        {"id": "p:1", "text": None, "source": "p", "_offset": 1, "_error": None, "lang": None, "tags": None},
        {"id": "own", "text": "d", "source": "p", "_offset": 2, "_error": None, "lang": "en", "tags": '["a"]'},
    ]
    with pytest.raises(TypeError, match=r"record 1: expected a str or a dict with 'text', found int"):
        from_records(["ok", 7], cfg)


def test_from_records_pandas():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"body": ["a", "b"], "n": [1, 2]})
    cfg = InputConfig(text_column="body")
    expected = [
        {"id": "df:0", "text": "a", "source": "df", "_offset": 0, "_error": None, "n": 1},
        {"id": "df:1", "text": "b", "source": "df", "_offset": 1, "_error": None, "n": 2},
    ]
    assert from_records(df.to_dict("records"), cfg, prefix="df").to_pylist() == expected
    assert from_records(df, cfg, prefix="df").to_pylist() == expected  # not its column names
    assert from_records([row for _, row in df.iterrows()], cfg, prefix="df").to_pylist() == expected


# ------------------------------------------------------------------------------------------- ids and layout


def test_ids_stable_across_parses(tmp_path):
    write(tmp_path / "r" / "a.jsonl", '{"text": "x"}\n{"text": "y"}\n')
    write(tmp_path / "r" / "sub" / "b.txt", "one\ntwo\n")
    first, second = read_rows(tmp_path / "r"), read_rows(tmp_path / "r")
    assert [r["id"] for r in first] == ["r/a.jsonl:1", "r/a.jsonl:2", "r/sub/b.txt:1", "r/sub/b.txt:2"]
    assert first == second


def test_ids_unique_across_roots_with_same_layout(tmp_path):
    for root in ("a", "b"):
        write(tmp_path / root / "x.jsonl", '{"text": "same"}\n')
    cfg = InputConfig(paths=(str(tmp_path / "a"), str(tmp_path / "b")))
    ids = [r["id"] for u in discover(cfg) for t in parse_file(u, cfg) for r in t.to_pylist()]
    assert ids == ["a/x.jsonl:1", "b/x.jsonl:1"]  # ids are <root folder name>/<path below it>:<offset>
    assert [r["id"] for r in read_rows(tmp_path)] == [f"{tmp_path.name}/a/x.jsonl:1", f"{tmp_path.name}/b/x.jsonl:1"]


def test_roots_with_same_name_rejected(tmp_path):
    a = write(tmp_path / "run1" / "data" / "x.jsonl", '{"text": "1"}\n')
    b = write(tmp_path / "run2" / "data" / "x.jsonl", '{"text": "2"}\n')
    cfg = InputConfig(paths=(str(a.parent), str(b.parent)))
    with pytest.raises(UserError, match=r"would get the same ids \(data/x\.jsonl:<offset>\)") as e:
        discover(cfg)
    assert str(a) in str(e.value) and str(b) in str(e.value) and "common parent" in str(e.value)
    # the same file named twice (its folder and a glob inside it) is read once
    units = discover(InputConfig(paths=(str(a.parent), str(a.parent / "*.jsonl"))))
    assert [u.relpath for u in units] == ["data/x.jsonl"]


def test_hive_partition_folders(tmp_path):
    root = tmp_path / "prev"
    for sub, texts in (("split=train", ["t1", "t2"]), ("split=val", ["v1"]), ("status=kept", ["k1"])):
        (root / sub).mkdir(parents=True)
        pq.write_table(pa.table({"text": texts}), root / sub / "part.parquet")
    tables = read_tables(root)
    by_source = {t["source"][0].as_py(): t for t in tables}
    assert sorted(by_source) == ["prev/split=train/part.parquet", "prev/split=val/part.parquet",
                                 "prev/status=kept/part.parquet"]
    assert by_source["prev/split=train/part.parquet"]["split"].to_pylist() == ["train", "train"]
    assert by_source["prev/split=val/part.parquet"]["split"].to_pylist() == ["val"]
    assert by_source["prev/status=kept/part.parquet"].column_names == CORE  # reserved: set anew by the stage
    assert hive_values("r/split=val/lang=en/x.parquet") == {"split": "val", "lang": "en"}
    assert hive_values("r/status=kept/x.parquet") == {}
    assert hive_values("r/a=b.parquet") == {}  # a file name is not a partition


# ------------------------------------------------------------------------------------------- bad input


def test_malformed_jsonl_line(tmp_path):
    f = write(tmp_path / "j" / "docs.jsonl", b'{"text": "good one"}\n{"text": "cut off\n{"text": "good two"}\n')
    rows = read_rows(f)
    assert [(r["_offset"], r["text"]) for r in good(rows)] == [(1, "good one"), (3, "good two")]
    (q,) = bad(rows)
    assert (q["id"], q["_offset"], q["text"]) == ("j/docs.jsonl:2", 2, '{"text": "cut off\n')
    assert q["_error"].startswith(f"{f} @ 2: malformed JSON (")
    assert q["_error"].endswith("expected one object per line")


def test_invalid_utf8_jsonl_line(tmp_path):
    f = write(tmp_path / "j" / "docs.jsonl", b'{"text": "ok"}\n{"text":"caf\xe9"}\n{"text": "ok too"}\n')
    rows = read_rows(f)
    assert [(r["_offset"], r["text"]) for r in good(rows)] == [(1, "ok"), (3, "ok too")]
    (q,) = bad(rows)
    assert q["_offset"] == 2 and q["text"] == '{"text":"caf\ufffd"}\n'
    assert q["_error"] == f"{f} @ 2: invalid UTF-8 at byte 12 of the line; re-encode the file as UTF-8"


def test_invalid_utf8_text_line(tmp_path):
    f = write(tmp_path / "t" / "lines.txt", b"fine line\nbad \xc3\x28 line\nlast line\n")
    rows = read_rows(f)
    assert [(r["_offset"], r["text"]) for r in good(rows)] == [(1, "fine line"), (3, "last line")]
    (q,) = bad(rows)
    assert q["_offset"] == 2
    assert q["_error"] == f"{f} @ 2: invalid UTF-8 at byte 4 of the line; re-encode the file as UTF-8"


def test_empty_file(tmp_path):
    f = write(tmp_path / "j" / "empty.jsonl", b"")
    write(tmp_path / "j" / "full.jsonl", '{"text": "still read"}\n')
    rows = read_rows(tmp_path / "j")
    assert [r["text"] for r in good(rows)] == ["still read"]
    (q,) = bad(rows)
    assert (q["id"], q["_offset"], q["text"]) == ("j/empty.jsonl:0", 0, None)
    assert q["_error"] == f"{f} @ 0: file is empty (0 bytes); remove it or re-create it"


def test_csv_row_with_missing_column(tmp_path):
    f = write(tmp_path / "c" / "docs.csv", "text,lang,score\nfirst,en,1\nshort row,en\nthird,de,3\n")
    rows = read_rows(f)
    assert [(r["_offset"], r["text"], r["lang"], r["score"]) for r in good(rows)] == [
        (2, "first", "en", "1"), (4, "third", "de", "3")]
    (q,) = bad(rows)
    assert (q["_offset"], q["text"]) == (3, "short row,en")
    assert q["_error"] == f"{f} @ 3: expected 3 fields (text, lang, score), found 2"


def test_truncated_tar_member(tmp_path):
    f = make_tar(tmp_path / "w" / "shard.tar", [
        ("a.txt", b"text of a"), ("b.txt", b"text of b"), ("c.txt", b"c" * 1000)])
    with tarfile.open(f) as tar:
        last = tar.getmembers()[-1]
    f.write_bytes(f.read_bytes()[:last.offset_data + 500])  # cut inside c.txt's data
    rows = read_rows(f)
    assert [(r["id"], r["text"]) for r in good(rows)] == [
        ("w/shard.tar:a", "text of a"), ("w/shard.tar:b", "text of b")]
    (q,) = bad(rows)
    assert q["_offset"] == 2
    assert q["_error"].startswith(f"{f} @ 2: tar shard unreadable from sample 'c' on (")
    assert "unexpected end of data" in q["_error"] and "re-create it" in q["_error"]


def test_tar_sample_with_invalid_json(tmp_path):
    f = make_tar(tmp_path / "w" / "shard.tar", [
        ("a.txt", b"text of a"), ("a.json", b'{"lang": "en"}'),
        ("b.txt", b"text of b"), ("b.json", b'{"lang": en}'),
        ("c.txt", b"text of c"), ("c.json", b'{"lang": "fr"}'),
    ])
    rows = read_rows(f)
    assert [(r["_offset"], r["text"], r["lang"]) for r in good(rows)] == [
        (0, "text of a", "en"), (2, "text of c", "fr")]
    (q,) = bad(rows)
    assert (q["id"], q["_offset"], q["text"]) == ("w/shard.tar:b", 1, "text of b")  # keyed like a good sample
    assert q["_error"] == (f"{f} @ 1: sample 'b': b.json is not valid JSON (Expecting value at line 1 column 10); "
                           f"expected a JSON object")


def test_parquet_without_text_column(tmp_path):
    f = tmp_path / "pq" / "notext.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), f)
    (q,) = read_rows(f)
    assert (q["id"], q["_offset"], q["text"]) == ("pq/notext.parquet:0", 0, None)
    assert q["_error"] == (f"{f} @ 0: Parquet file has no 'text' column and no conversation ('messages', or "
                           f"'instruction' + 'response') (found ['body', 'n']); set input.text_column or "
                           f"input.messages_column")


def test_corrupt_parquet(tmp_path):
    f = write(tmp_path / "pq" / "broken.parquet", b"PAR1" + b"\x00garbage" * 50)
    pq.write_table(pa.table({"text": ["fine"]}), tmp_path / "pq" / "fine.parquet")
    rows = read_rows(tmp_path / "pq")
    assert [r["text"] for r in good(rows)] == ["fine"]
    (q,) = bad(rows)
    assert (q["id"], q["_offset"]) == ("pq/broken.parquet:-1", -1)
    assert q["_error"].startswith(f"{f} @ -1: unreadable as parquet: ArrowInvalid: ")
    assert "magic bytes" in q["_error"]


def test_bad_first_line_keeps_other_columns(tmp_path):
    f = write(tmp_path / "j" / "docs.jsonl", b'{oops\n{"text": "a", "lang": "en"}\n{"text": "b", "extra": 1}\n')
    (t,) = read_tables(f)
    assert t.column_names == CORE + ["lang", "extra"]
    assert t["lang"].to_pylist() == [None, "en", None]
    assert t["extra"].to_pylist() == [None, None, 1]


def test_field_with_mixed_types_becomes_text(tmp_path):
    f = write(tmp_path / "j" / "docs.jsonl", b'{"text": "a", "n": 1}\n{"text": "b", "n": "x"}\n')
    rows = read_rows(f)
    assert [(r["text"], r["n"], r["_error"]) for r in rows] == [("a", "1", None), ("b", "x", None)]


# ------------------------------------------------------------------------------------------- discover


def test_discover_nonexistent_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match=r"does not exist") as e:
        discover(InputConfig(paths=(str(missing),)))
    assert repr(str(missing)) in str(e.value)
    for ext in (".parquet", ".jsonl", ".csv", ".txt", ".tar"):
        assert ext in str(e.value)
    with pytest.raises(UserError, match=r"does not exist"):
        discover(InputConfig(paths=(str(tmp_path / "*.jsonl"),)))  # a glob matching nothing


def test_discover_folder_without_readable_files(tmp_path):
    for name in ("notes.md", ".hidden.jsonl", "_SUCCESS", "_SUCCESS.clean", ".tmp-1/part.parquet"):
        write(tmp_path / "d" / name, "x")
    with pytest.raises(UserError, match=r"no readable files under .* for format 'auto'; expected .parquet"):
        discover(InputConfig(paths=(str(tmp_path / "d"),)))


def test_discover_skips_hidden_and_markers(tmp_path):
    for name in (".hidden.jsonl", "_SUCCESS", "_SUCCESS.clean", ".tmp-1/part.jsonl", "_tmp/x.jsonl", "README.md"):
        write(tmp_path / "d" / name, '{"text": "no"}\n')
    write(tmp_path / "d" / "sub" / "good.jsonl", '{"text": "yes"}\n')
    units = discover(InputConfig(paths=(str(tmp_path / "d"),)))
    assert [(u.relpath, u.fmt) for u in units] == [("d/sub/good.jsonl", "jsonl")]


# ------------------------------------------------------------------------------------------- config


def test_config_overrides_parse():
    cfg = load_config(None, ["input.paths=['a', 'b']", "clean.allowed_langs=[]", "ray.num_cpus=2",
                             "ray.progress_bars=false", "split.train=0.8", "split.val=0.1", "split.test=0.1"])
    assert cfg.input.paths == ("a", "b") and cfg.clean.allowed_langs == () and cfg.ray.num_cpus == 2
    assert cfg.ray.progress_bars is False and cfg.split.train == 0.8


def test_config_unknown_key():
    with pytest.raises(ValueError, match=r"unknown key\(s\) batchsize in \[ray\]; valid keys: address, num_cpus, "
                                         r"object_store_mb, include_dashboard, target_max_block_size_mb, batch_size, "
                                         r"progress_bars"):
        load_config(None, ["ray.batchsize=3"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) nosuch in the top level; valid keys: input, output"):
        load_config(None, ["nosuch.x=1"])


def test_config_wrong_type():
    with pytest.raises(TypeError, match=r"^ray\.batch_size expects int; got str 'abc'$"):
        load_config(None, ["ray.batch_size=abc"])  # not a TOML literal, so the string "abc"
    with pytest.raises(TypeError, match=r"^ray\.progress_bars expects bool; got int 1$"):
        load_config(None, ["ray.progress_bars=1"])
    with pytest.raises(TypeError, match=r"^clean\.allowed_langs expects a list; got int 5$"):
        load_config(None, ["clean.allowed_langs=5"])


def test_config_invalid_value():
    with pytest.raises(ValueError, match=r"split\.train \+ split\.val \+ split\.test must be 1 .* got 0\.5 \+ "):
        load_config(None, ["split.train=0.5"])
    with pytest.raises(ValueError, match=r"^input\.format must be one of auto, parquet, jsonl, csv, text, "
                                         r"webdataset, hf, warc; got 'xml'$"):
        load_config(None, ["input.format=xml"])


def test_config_file_with_typo_section(tmp_path):
    f = write(tmp_path / "job.toml", '[inptu]\npaths = ["x"]\n')
    with pytest.raises(ValueError, match=r"unknown key\(s\) inptu in the top level; valid keys: input, output"):
        load_config(f)
    with pytest.raises(ValueError, match=r"config file .*missing\.toml does not exist"):
        load_config(tmp_path / "missing.toml")


def test_tar_members_over_the_size_limit_and_traversal_names_are_harmless(tmp_path):
    f = make_tar(tmp_path / "w" / "shard.tar", [
        ("a.txt", b"text of a"), ("big.txt", b"x" * (2 * 1024 * 1024)), ("big.json", b'{"k": 1}'),
        ("../../escape.txt", b"text of escape"), ("c.txt", b"text of c")])
    rows = read_rows(f, max_member_mb=1)
    assert [(r["id"], r["text"]) for r in good(rows)] == [
        ("w/shard.tar:a", "text of a"), ("w/shard.tar:escape", "text of escape"), ("w/shard.tar:c", "text of c")]
    (q,) = bad(rows)  # the big sample is quarantined, not read into memory; the shard goes on
    assert q["id"] == "w/shard.tar:big" and "member big.txt is 2 MB, over input.max_member_mb = 1" in q["_error"]
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


# ------------------------------------------------------------------------------------------- issue 14: records, limits

MB = 1024 * 1024


def _jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_csv_field_over_the_csv_module_limit_is_read(tmp_path):
    # 200,000 characters: over Python's csv.field_size_limit (131,072), which made this row and every row after it
    # one quarantined row; far under input.max_record_mb, so it is a document like any other
    big = "word " * 40_000
    f = write(tmp_path / "c" / "docs.csv", f'text,n\nfirst,1\n"{big}",2\nafter,3\n')
    rows = read_rows(f)
    assert [(r["text"], r["n"], r["_error"]) for r in rows] == [("first", "1", None), (big, "2", None),
                                                                ("after", "3", None)]


def test_csv_records_over_max_record_mb_are_each_their_own_quarantine_row(tmp_path):
    unquoted = "x" * (2 * MB)  # one physical line
    quoted = 'a,\n""b""\n' * (MB // 8 + 1)  # over 1 MB across many lines, with delimiters, quotes and newlines
    f = write(tmp_path / "c" / "docs.csv",
              f'text,n\nfirst,1\n{unquoted},2\nsecond,3\n"{quoted}",4\nthird,5\n"{quoted}",6\n')
    rows = read_rows(f, max_record_mb=1)
    assert [(r["text"], r["n"]) for r in good(rows)] == [("first", "1"), ("second", "3"), ("third", "5")]
    q = bad(rows)
    assert [r["_offset"] for r in q] == [3, 5 + quoted.count("\n"), 7 + 2 * quoted.count("\n")]
    for r in q:
        assert "over input.max_record_mb = 1" in r["_error"] and "raise input.max_record_mb" in r["_error"], r
        assert len(r["text"]) <= 2000  # a snippet, not the record


def test_jsonl_with_byte_order_mark_keeps_its_first_record(tmp_path):
    f = write(tmp_path / "j" / "bom.jsonl", b"\xef\xbb\xbf" + _jsonl({"text": "first"}, {"text": "second"}))
    rows = read_rows(f)
    assert [(r["id"], r["text"], r["_error"]) for r in rows] == [
        ("j/bom.jsonl:1", "first", None), ("j/bom.jsonl:2", "second", None)]


@pytest.mark.parametrize("value,kind", [(["a", "b"], "list"), (42, "int"), (1.5, "float"), ({"a": 1}, "dict"),
                                        (True, "bool")])
def test_jsonl_text_that_is_not_a_string_is_quarantined_with_its_type(tmp_path, value, kind):
    f = write(tmp_path / "j" / "docs.jsonl", _jsonl({"text": "ok"}, {"text": value}, {"text": "ok too"}))
    rows = read_rows(f)
    assert [r["text"] for r in good(rows)] == ["ok", "ok too"]
    (q,) = bad(rows)
    assert q["_offset"] == 2
    assert f"'text' is {kind} (" in q["_error"] and "expected a string" in q["_error"], q["_error"]


def test_parquet_text_column_that_is_not_a_string_is_quarantined_row_by_row(tmp_path):
    pq.write_table(pa.table({"text": [[1, 2], None, [3]]}), write(tmp_path / "pq" / "lists.parquet", b""))
    pq.write_table(pa.table({"text": pa.array(["fine", "also fine"], pa.large_string())}),
                   tmp_path / "pq" / "large.parquet")
    rows = read_rows(tmp_path / "pq")
    assert [(r["source"], r["text"]) for r in good(rows) if r["text"]] == [("pq/large.parquet", "fine"),
                                                                            ("pq/large.parquet", "also fine")]
    q = bad(rows)  # the null is a record without text (clean drops it as empty), the lists are damage
    assert [(r["source"], r["_offset"], r["text"]) for r in q] == [("pq/lists.parquet", 0, "[1, 2]"),
                                                                   ("pq/lists.parquet", 2, "[3]")]
    assert all("'text' is list (" in r["_error"] and "expected a string" in r["_error"] for r in q)
    assert [(r["_offset"], r["text"]) for r in rows if r["source"] == "pq/lists.parquet" and not r["_error"]] == [
        (1, None)]


def test_ids_are_strings_the_same_way_in_every_format(tmp_path):
    # 42 and "42" are one id in every format (dedup then sets both rows aside as duplicate_id); an id that has no
    # single string form (float: 1.0 or "1"? bool: True or "true"?, list, object) is quarantined, never guessed
    write(tmp_path / "r" / "a.jsonl", _jsonl({"text": "n", "id": 42}, {"text": "s", "id": "42"},
                                             {"text": "f", "id": 1.0}, {"text": "b", "id": True},
                                             {"text": "l", "id": [1]}, {"text": "none", "id": None}))
    write(tmp_path / "r" / "b.csv", "id,text\n42,c\n")
    pq.write_table(pa.table({"id": pa.array([42, None], pa.int64()), "text": ["p", "q"]}), tmp_path / "r" / "c.parquet")
    pq.write_table(pa.table({"id": [0.5], "text": ["x"]}), tmp_path / "r" / "d.parquet")
    rows = read_rows(tmp_path / "r")
    assert [(r["id"], r["text"]) for r in good(rows)] == [
        ("42", "n"), ("42", "s"), ("r/a.jsonl:6", "none"), ("42", "c"), ("42", "p"), ("r/c.parquet:1", "q")]
    q = bad(rows)
    assert [(r["source"], r["_offset"]) for r in q] == [("r/a.jsonl", 3), ("r/a.jsonl", 4), ("r/a.jsonl", 5),
                                                         ("r/d.parquet", 0)]
    for r, kind in zip(q, ("float", "bool", "list", "float")):
        assert f"'id' is {kind} (" in r["_error"] and "expected a string or an integer" in r["_error"], r


def _cut(data: bytes, fraction: float = 0.5) -> bytes:
    return data[:int(len(data) * fraction)]


@pytest.mark.parametrize("suffix,compress", [
    (".jsonl.gz", lambda b: gzip.compress(b, mtime=0)),
    (".jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    # many small frames, as pzstd writes: the frames before the cut are whole
    (".jsonl.zst", lambda b: b"".join(zstandard.ZstdCompressor().compress(b[i:i + 4096])
                                      for i in range(0, len(b), 4096))),
])
def test_truncated_compressed_file_keeps_the_records_before_the_cut(tmp_path, suffix, compress):
    texts = [f"record number {i} " + "filler " * (i % 7) for i in range(400)]
    f = write(tmp_path / "j" / f"cut{suffix}", _cut(compress(_jsonl(*({"text": t} for t in texts)))))
    rows = read_rows(f)
    kept = [r["text"] for r in good(rows)]
    assert kept == texts[:len(kept)]  # a prefix, each text whole
    (q,) = bad(rows)
    assert q["_offset"] == len(kept) + 1  # the first line not read whole
    assert f"after line {len(kept)}" in q["_error"] and "decompressed bytes" in q["_error"], q["_error"]
    assert "ends early" in q["_error"] and "re-create" in q["_error"], q["_error"]


def test_truncated_zst_single_frame_is_not_silently_empty(tmp_path):
    # zstandard's stream_reader returns b"" at a cut inside a frame, without an error: 400 records vanished
    data = zstandard.ZstdCompressor().compress(_jsonl(*({"text": f"doc {i}"} for i in range(400))))
    f = write(tmp_path / "j" / "cut.jsonl.zst", data[:len(data) // 2])
    rows = read_rows(f)
    assert len(bad(rows)) == 1 and "ends early" in bad(rows)[0]["_error"]
    assert [r["text"] for r in good(rows)] == [f"doc {i}" for i in range(len(good(rows)))]


def _peak_while(fn) -> tuple[object, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix,compress", [(".jsonl", bytes), (".jsonl.gz", lambda b: gzip.compress(b, 1)),
                                             (".jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b))])
def test_a_huge_line_is_skipped_streaming(tmp_path, suffix, compress):
    huge = b'{"text": "' + b"z" * (24 * MB) + b'"}\n'
    f = write(tmp_path / "j" / f"huge{suffix}", compress(_jsonl({"text": "before"}) + huge + _jsonl({"text": "after"})))
    rows, peak = _peak_while(lambda: read_rows(f, max_line_mb=1))
    assert [r["text"] for r in good(rows)] == ["before", "after"]
    (q,) = bad(rows)
    assert q["_offset"] == 2 and f"line is {len(huge):,} bytes, over input.max_line_mb = 1" in q["_error"]
    assert "raise input.max_line_mb" in q["_error"]
    assert peak < 8 * MB, f"{peak:,} bytes held to skip a 24 MB line: it must be read in bounded chunks"


def test_records_over_max_record_mb_in_text_and_jsonl(tmp_path):
    write(tmp_path / "t" / "lines.txt", b"short\n" + b"y" * (MB + 10) + b"\nlast\n")
    rows = read_rows(tmp_path / "t", max_record_mb=1)
    assert [r["text"] for r in good(rows)] == ["short", "last"]
    (q,) = bad(rows)
    assert q["_offset"] == 2 and "over input.max_record_mb = 1" in q["_error"]
    write(tmp_path / "f" / "whole.txt", b"w" * (MB + 1))
    write(tmp_path / "f" / "small.txt", b"fits")
    rows = read_rows(tmp_path / "f", max_record_mb=1, text_mode="file")
    assert [r["text"] for r in good(rows)] == ["fits"]
    (q,) = bad(rows)
    assert q["source"] == "f/whole.txt" and f"record is {MB + 1:,} bytes, over input.max_record_mb = 1" in q["_error"]
    # JSON escapes: the line is under max_line_mb, the text it holds over max_record_mb
    write(tmp_path / "j" / "esc.jsonl", _jsonl({"text": "\u00e9" * (MB // 2 + 1)}, {"text": "ok"}))
    rows = read_rows(tmp_path / "j", max_record_mb=1)
    assert [r["text"] for r in good(rows)] == ["ok"] and "over input.max_record_mb = 1" in bad(rows)[0]["_error"]


@pytest.mark.parametrize("suffix,compress", [(".jsonl.gz", lambda b: gzip.compress(b, 9)),
                                             (".jsonl.zst", lambda b: zstandard.ZstdCompressor(19).compress(b))])
def test_decompression_bomb_stops_at_max_decompressed_mb(tmp_path, suffix, compress):
    line = _jsonl({"text": "bomb " * 200})  # 1,014 bytes a line, compressing ~100x
    data = compress(line * (3 * MB // len(line)))
    f = write(tmp_path / "j" / f"bomb{suffix}", data)
    assert len(data) < 100_000
    rows = read_rows(f, max_decompressed_mb=1)
    n = len(good(rows))
    assert n == MB // len(line)  # every whole line within the first MB
    (q,) = bad(rows)
    assert q["_offset"] == n + 1 and "input.max_decompressed_mb = 1" in q["_error"], q["_error"]
    assert "raise input.max_decompressed_mb" in q["_error"]
    # one line of 40 MB of zeros (a 40 kB file): never held whole
    f = write(tmp_path / "z" / f"zeros{suffix}", compress(b'{"text": "' + b"0" * (40 * MB)))
    rows, peak = _peak_while(lambda: read_rows(f, max_line_mb=1))
    (q,) = rows
    assert "over input.max_line_mb = 1" in q["_error"] and peak < 8 * MB, (q["_error"], peak)


def test_nul_bytes_in_text_lines_and_csv_rows_are_quarantined(tmp_path):
    write(tmp_path / "t" / "lines.txt", b"fine\nbin\x00ary\nfine too\n")
    write(tmp_path / "t" / "rows.csv", b"text\nfine\nbin\x00ary\n")
    rows = read_rows(tmp_path / "t")
    assert [(r["source"], r["text"]) for r in good(rows)] == [("t/lines.txt", "fine"), ("t/lines.txt", "fine too"),
                                                              ("t/rows.csv", "fine")]
    q = bad(rows)
    assert [(r["source"], r["_offset"]) for r in q] == [("t/lines.txt", 2), ("t/rows.csv", 3)]
    assert all("NUL byte" in r["_error"] and "not text" in r["_error"] for r in q)


def test_tar_with_a_corrupt_header_mid_shard_says_what_was_not_read(tmp_path):
    # tarfile ends its iteration without an error at an invalid header after the first member: every sample
    # after it vanished without a trace
    f = make_tar(tmp_path / "w" / "shard.tar", [(f"s{i}.txt", f"sample {i}".encode()) for i in range(6)])
    with tarfile.open(f) as tar:
        third = tar.getmembers()[3]
    data = bytearray(f.read_bytes())
    data[third.offset:third.offset + 100] = b"\xff" * 100  # its name and mode: the checksum no longer matches
    f.write_bytes(bytes(data))
    rows = read_rows(f)
    assert [r["text"] for r in good(rows)] == ["sample 0", "sample 1", "sample 2"]
    (q,) = bad(rows)
    assert q["_offset"] == 3
    assert f"{len(data) - third.offset:,} bytes" in q["_error"] and "not read" in q["_error"], q["_error"]


def test_parquet_with_a_corrupt_row_group_loses_only_that_group(tmp_path):
    f = tmp_path / "pq" / "groups.parquet"
    f.parent.mkdir()
    texts = [f"row {i} " + "text " * 20 for i in range(30)]
    pq.write_table(pa.table({"text": texts}), f, row_group_size=10, compression="none")
    meta = pq.ParquetFile(f).metadata
    col = meta.row_group(1).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(f.read_bytes())
    data[start:start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    f.write_bytes(bytes(data))
    rows = read_rows(f)
    assert [r["text"] for r in good(rows)] == texts[:10] + texts[20:]
    q = bad(rows)  # one quarantine row per record of the lost group: the accounting stays exact
    assert [r["_offset"] for r in q] == list(range(10, 20))
    assert all("row group 1 (rows 10-19, 10 records) unreadable" in r["_error"] for r in q), q[0]["_error"]


def test_hf_missing_split_and_corrupt_arrow_file_are_quarantined(tmp_path, hf_cache):
    dd = hf_cache.DatasetDict({"train": hf_cache.Dataset.from_dict({"text": ["tr"]}),
                               "test": hf_cache.Dataset.from_dict({"text": ["te"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    write(tmp_path / "other.jsonl", _jsonl({"text": "still read"}))
    cfg = InputConfig(paths=(str(tmp_path / "dd"), str(tmp_path / "other.jsonl")), hf_split="validation")
    rows = [r for u in discover(cfg) for t in parsed(u, cfg) for r in t.to_pylist()]
    assert [r["text"] for r in good(rows)] == ["still read"]
    (q,) = bad(rows)
    assert q["source"] == "dd" and "no split 'validation'" in q["_error"] and "test, train" in q["_error"]
    assert "set input.hf_split" in q["_error"]

    for arrow in (tmp_path / "dd" / "train").glob("*.arrow"):
        arrow.write_bytes(arrow.read_bytes()[:40])
    cfg = InputConfig(paths=(str(tmp_path / "dd"),))
    (q,) = [r for u in discover(cfg) for t in parsed(u, cfg) for r in t.to_pylist()]
    assert q["source"] == "dd" and "unreadable as hf" in q["_error"] and "save_to_disk" in q["_error"], q["_error"]


def test_hf_text_that_is_not_a_string_is_quarantined(tmp_path, hf_cache):
    hf_cache.Dataset.from_dict({"text": [[1, 2], [3]], "n": [0, 1]}).save_to_disk(str(tmp_path / "lists"))
    _, rows = _hf_rows(InputConfig(paths=(str(tmp_path / "lists"),)))
    assert len(rows) == 2 and all("'text' is list (" in r["_error"] for r in rows)


def test_every_file_s_last_row_carries_the_records_the_reader_saw(tmp_path):
    write(tmp_path / "r" / "a.jsonl", _jsonl({"text": "1"}) + b"{broken\n" + _jsonl({"text": "3"}))
    write(tmp_path / "r" / "b.txt", "".join(f"line {i}\n" for i in range(5000)))  # three tables of 2048
    write(tmp_path / "r" / "c.jsonl", b"")
    cfg = InputConfig(paths=(str(tmp_path / "r"),))
    per_file = {u.relpath: [n for t in parse_file(u, cfg) for n in t[RECORDS].to_pylist()] for u in discover(cfg)}
    assert per_file == {"r/a.jsonl": [None, None, 3], "r/b.txt": [None] * 4999 + [5000], "r/c.jsonl": [1]}


def test_parquet_value_with_invalid_utf8_is_quarantined(tmp_path):
    # a damaged byte inside a string value: the Parquet reader passes it on, and the next reader of the row
    # (to_pylist, the clean step) failed with UnicodeDecodeError; the fuzz suite found it
    f = tmp_path / "pq" / "bytes.parquet"
    f.parent.mkdir()
    pq.write_table(pa.table({"text": ["alpha row", "beta row", "gamma row"]}), f, compression="none",
                   use_dictionary=False)
    data = f.read_bytes()
    f.write_bytes(data.replace(b"beta", b"\xffeta", 1))
    rows = read_rows(f)
    assert [(r["_offset"], r["text"]) for r in good(rows)] == [(0, "alpha row"), (2, "gamma row")]
    (q,) = bad(rows)
    assert q["_offset"] == 1 and "invalid value in this row" in q["_error"] and "UTF8" in q["_error"], q["_error"]


@pytest.mark.parametrize("key", ["max_member_mb", "max_line_mb", "max_record_mb", "max_decompressed_mb"])
def test_input_limits_must_be_positive(key):
    with pytest.raises(ValueError, match=rf"^input\.{key} must be at least 1 \(MB\); got 0$"):
        load_config(None, [f"input.{key}=0"])
    assert getattr(load_config(None, [f"input.{key}=3"]).input, key) == 3
