"""WARC / WET input (ray_jobs/io/warc.py): rows and columns of real captures, every record that is not a
document accounted as a quarantine row, damaged files keeping the records before the damage, and one run of
`ray-jobs clean` on a WARC folder through a 2-CPU local Ray."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from ray_jobs.config import InputConfig
from ray_jobs.io.formats import FileUnit, detect_format, parse_file
from ray_jobs.io.readers import discover, read_group
from tests.conftest import SAMPLE

WARC_SAMPLE = SAMPLE / "warc"
SAMPLE_URLS = [  # shards/sample/warc/SOURCE.md
    "https://creativecommons.org/",
    "https://creativecommons.org/mission/",
    "https://creativecommons.org/2024/03/28/cc-joins-civil-society-letter-urging-u-s-to-support-openness-and-"
    "transparency-in-ai/",
    "https://creativecommons.org/2024/04/23/cc-at-wipo-slow-progress-on-copyright-exceptions-for-cultural-heritage-"
    "institutions/",
]
PAGE = (b"<html><head><title>T</title></head><body><nav>Home | About</nav><article><h1>A real page</h1>"
        b"<p>This paragraph is the main content of the page and long enough to be kept by the extractor. It talks "
        b"about open licences, shared knowledge and the commons.</p></article></body></html>")


# --------------------------------------------------------------------------------------------- WARC writing


def record(kind: str, uri: str, block: bytes, n: int, **headers: str) -> bytes:
    """One WARC/1.1 record: the header lines, the block, the two CRLFs that end it."""
    lines = [f"WARC-Type: {kind}", f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>",
             "WARC-Date: 2026-12-05T10:00:00Z", f"WARC-Target-URI: {uri}",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()), f"Content-Length: {len(block)}"]
    return ("WARC/1.1\r\n" + "\r\n".join(lines) + "\r\n\r\n").encode() + block + b"\r\n\r\n"


def response(uri: str, body: bytes, n: int, content_type: str | None = "text/html; charset=utf-8",
             status: str = "200 OK", **headers: str) -> bytes:
    http = f"HTTP/1.1 {status}\r\n" + (f"Content-Type: {content_type}\r\n" if content_type else "")
    block = (http + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return record("response", uri, block, n, Content_Type="application/http; msgtype=response", **headers)


def write_warc(path: Path, records: list[bytes]) -> Path:
    """A .warc, or a .warc.gz of one gzip member per record as WARC writers make them."""
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records) if path.suffix == ".gz"
                     else b"".join(records))
    return path


def rows(path: Path, **cfg: object) -> list[dict]:
    unit = FileUnit(str(path), f"in/{path.name}", "warc")
    tables = list(parse_file(unit, InputConfig(paths=(str(path),), **cfg)))  # type: ignore[arg-type]
    out = pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []
    if out:  # the reader's own count of what it gave, on the last row
        assert out[-1]["_records"] == len(out) and all(r["_records"] is None for r in out[:-1])
    return out


def errors(rs: list[dict]) -> dict[str, str]:
    return {r["id"]: r["_error"] for r in rs if r["_error"] is not None}


# --------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name,fmt", [
    ("a.warc", "warc"), ("a.warc.gz", "warc"), ("a.warc.zst", "warc"), ("a.wet", "warc"), ("a.wet.gz", "warc"),
    ("CC-MAIN-20240412-00000.warc.wet.gz", "warc"), ("a.jsonl.gz", "jsonl"), ("a.gz", None), ("a.warc.txt", "text"),
])
def test_auto_detects_warc_and_wet_names(name, fmt):
    assert detect_format(Path(name)) == fmt


def test_the_sample_gives_one_row_per_response_with_its_columns():
    cfg = InputConfig(paths=(str(WARC_SAMPLE),))
    units = discover(cfg)
    assert [(u.relpath, u.fmt) for u in units] == [("warc/creativecommons-0000.warc.gz", "warc")]
    rs = pa.concat_tables(list(read_group(units, cfg))).to_pylist()
    # 11 records: warcinfo, 4 requests and a metadata record are skipped, the 4 responses are rows
    assert [r["url"] for r in rs] == SAMPLE_URLS
    assert all(r["_error"] is None for r in rs)
    assert len({r["id"] for r in rs}) == 4 and all(r["id"].startswith("urn:uuid:") for r in rs)
    assert {(r["content_type"], r["http_status"], r["warc_date"][:10]) for r in rs} == {
        ("text/html", 200, "2024-04-25")}
    assert all(r["source"] == "warc/creativecommons-0000.warc.gz" for r in rs)
    # the chunked bodies are decoded: no chunk size ("7d72") in front of the text
    assert rs[0]["text"].startswith("Better Sharing, Brighter Future"), rs[0]["text"][:80]
    assert "Creative Commons (CC) is an international nonprofit" in rs[1]["text"]
    # main content only: no script or style survives, and image alt texts are left out
    assert all("<script" not in r["text"] and "{" not in r["text"][:200] for r in rs)
    offsets = [r["_offset"] for r in rs]
    assert offsets == sorted(set(offsets)) and offsets[0] > 0


def test_the_shared_dolma_warcs_give_text_for_every_response(shared_data):
    files = sorted((shared_data / "web_samples_dolma" / "warc").glob("*.warc.gz"))
    if not files:
        pytest.skip("../shared/data/web_samples_dolma/warc holds no .warc.gz")
    rs = [r for f in files for r in rows(f)]
    assert len(rs) == 37 and not errors(rs)  # 22 + 15 HTML responses (SOURCE.md), none empty
    short = [r["url"] for r in rs if len(r["text"]) < 100]
    # the one known loss (benchmarks/RESULTS.md): resiliparse's main-content heuristic keeps the title and first
    # line of this page and drops its list of facts (trafilatura keeps them)
    assert short == ["https://soldaini.net/facts/"], short


def test_records_that_are_not_documents_are_quarantined_and_the_file_goes_on(tmp_path):
    latin1 = PAGE.replace(b"A real page", "Une page réelle".encode("latin-1"))
    path = write_warc(tmp_path / "mixed.warc.gz", [
        record("warcinfo", "", b"software: test\r\n", 0, Content_Type="application/warc-fields"),
        record("request", "http://a.example/", b"GET / HTTP/1.1\r\n\r\n", 1,
               Content_Type="application/http; msgtype=request"),
        response("http://a.example/", PAGE, 2),
        response("http://a.example/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00binary", 3, "image/png"),
        response("http://a.example/paper.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3", 4, "application/pdf"),
        response("http://a.example/gone", b"<html><body>Not found</body></html>", 5, status="404 Not Found"),
        response("http://a.example/moved", b"", 6, status="301 Moved Permanently"),
        response("http://a.example/js", b"<html><body><script>var x = 1;</script></body></html>", 7),
        response("http://a.example/fr", latin1, 8, "text/html; charset=iso-8859-1"),
        response("http://a.example/untyped", PAGE, 9, None),  # no type: sniffed as HTML
        response("http://a.example/cut", PAGE[:60], 10, WARC_Truncated="length"),
        response("http://a.example/after", PAGE, 11),
    ])
    rs = rows(path)
    assert len(rs) == 10  # the warcinfo and request records are not documents: skipped, not rows
    kept = {r["url"]: r for r in rs if r["_error"] is None}
    assert sorted(kept) == ["http://a.example/", "http://a.example/after", "http://a.example/fr",
                            "http://a.example/untyped"]
    assert "Une page réelle" in kept["http://a.example/fr"]["text"]  # the header's charset, not UTF-8
    assert "main content of the page" in kept["http://a.example/"]["text"]
    assert kept["http://a.example/untyped"]["content_type"] is None
    assert kept["http://a.example/after"]["id"] == "urn:uuid:00000000-0000-0000-0000-000000000011"

    bad = {r["url"]: r for r in rs if r["_error"] is not None}  # quarantine rows keep the record's columns
    assert {u: r["http_status"] for u, r in bad.items() if r["http_status"] != 200} == {
        "http://a.example/gone": 404, "http://a.example/moved": 301}
    expected = {
        "http://a.example/logo.png": "payload type 'image/png' is not in input.warc_content_types",
        "http://a.example/paper.pdf": "payload type 'application/pdf' is not in input.warc_content_types",
        "http://a.example/gone": "HTTP status 404",
        "http://a.example/moved": "HTTP status 301",
        "http://a.example/js": "no text after HTML extraction",
        "http://a.example/cut": "the crawler cut this payload (WARC-Truncated: length)",
    }
    assert sorted(bad) == sorted(expected)
    for url, reason in expected.items():
        assert f"response for {url}: {reason}" in bad[url]["_error"], bad[url]["_error"]
    for r in rs:
        if r["_error"] is not None:  # file and offset first, the id from the offset, no text for binary records
            assert r["_error"].startswith(f"{path} @ {r['_offset']}: ") and r["id"] == f"in/{path.name}:{r['_offset']}"
    assert {r["text"] for r in rs if r["_error"] and "image/png" in r["_error"]} == {None}


def test_charset_from_meta_or_detection_and_undecodable_bytes_do_not_crash(tmp_path):
    meta = ('<html><head><meta charset="windows-1251"></head><body><article><p>'
            + "Привет, это главный текст страницы, достаточно длинный для извлечения. " * 3
            + "</p></article></body></html>").encode("cp1251")
    broken = PAGE.replace(b"A real page", b"A real page \xff\xfe\x80 bytes")
    path = write_warc(tmp_path / "cs.warc", [
        response("http://b.example/ru", meta, 1, "text/html"),
        response("http://b.example/broken", broken, 2, "text/html; charset=utf-8"),
        response("http://b.example/label", PAGE, 3, "text/html; charset=no-such-charset"),
    ])
    rs = rows(path)
    assert [r["_error"] for r in rs] == [None, None, None]
    assert "Привет, это главный текст" in rs[0]["text"]
    assert "main content of the page" in rs[1]["text"] and "main content of the page" in rs[2]["text"]


def test_an_added_text_type_is_read_as_text_and_not_extracted(tmp_path):
    notes = "Plain notes <b>not markup</b>, kept as they are."
    path = write_warc(tmp_path / "types.warc", [response("http://h.example/notes.txt", notes.encode(), 1, "text/plain"),
                                                response("http://h.example/", PAGE, 2)])
    assert "payload type 'text/plain' is not in" in rows(path)[0]["_error"]  # the default: HTML only
    rs = rows(path, warc_content_types=("text/html", "text/plain"))
    assert rs[0]["text"] == notes and rs[0]["content_type"] == "text/plain"
    assert "main content of the page" in rs[1]["text"]


def test_wet_conversion_records_give_their_text(tmp_path):
    texts = ["Plain text of the first page.\nSecond line.", "Текст второй страницы."]
    path = write_warc(tmp_path / "CC-MAIN-x.warc.wet.gz", [
        record("warcinfo", "", b"software: test\r\n", 0, Content_Type="application/warc-fields"),
        *(record("conversion", f"http://c.example/{i}", t.encode(), i + 1, Content_Type="text/plain",
                 WARC_Refers_To=f"<urn:uuid:{i}>") for i, t in enumerate(texts)),
        record("conversion", "http://c.example/empty", b"  \n", 9, Content_Type="text/plain"),
    ])
    assert detect_format(path) == "warc"
    rs = rows(path)
    assert [r["text"] for r in rs[:2]] == texts
    assert {(r["content_type"], r["http_status"]) for r in rs[:2]} == {("text/plain", None)}
    assert rs[2]["_error"] is not None and "http://c.example/empty" in rs[2]["_error"] \
        and "no text after decoding" in rs[2]["_error"]


def test_a_truncated_warc_gz_keeps_the_records_before_the_cut(tmp_path):
    recs = [response(f"http://d.example/{i}", PAGE, i) for i in range(4)]
    whole = write_warc(tmp_path / "whole.warc.gz", recs).read_bytes()
    last_member = len(gzip.compress(recs[-1], mtime=0))
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(whole[:len(whole) - last_member // 2])  # half of the last record's gzip member is gone
    rs = rows(cut)
    assert [r["url"] for r in rs[:3]] == [f"http://d.example/{i}" for i in range(3)]
    assert len(rs) == 4 and rs[3]["_error"] is not None
    assert "gzip stream ends early" in rs[3]["_error"] and "truncated" in rs[3]["_error"]

    plain = tmp_path / "cut.warc"  # no compression: the file ends inside the last record's payload
    plain.write_bytes(b"".join(recs)[:-100])
    rs = rows(plain)
    assert [r["_error"] is None for r in rs] == [True, True, True, False]
    assert "the file ends inside this record" in rs[3]["_error"] and "http://d.example/3" in rs[3]["_error"]


def test_garbage_is_one_quarantine_row_and_the_records_before_it_are_kept(tmp_path):
    noise = bytes(range(256)) * 8
    for name, data in [("noise.warc.gz", noise), ("noise.warc", noise),
                       ("text.warc", b"this is not a WARC file\n" * 50)]:
        rs = rows(tmp_path.joinpath(name).write_bytes(data) and tmp_path / name)
        assert len(rs) == 1 and rs[0]["_error"] is not None, (name, rs)
        assert ("gzip stream is damaged" if name.endswith(".gz") else "no WARC record could be read") in \
            rs[0]["_error"], rs[0]["_error"]
    good = [response(f"http://e.example/{i}", PAGE, i) for i in range(2)]
    middle = write_warc(tmp_path / "middle.warc", [*good, noise, response("http://e.example/late", PAGE, 7)])
    rs = rows(middle)
    assert [r["url"] for r in rs[:2]] == ["http://e.example/0", "http://e.example/1"]
    assert len(rs) == 3 and "invalid WARC data after the record at byte" in rs[2]["_error"]


def test_a_record_over_max_record_mb_is_quarantined_unread(tmp_path):
    big = b"<html><body><p>" + b"word " * (1024 * 1024 // 5 + 10) + b"</p></body></html>"
    path = write_warc(tmp_path / "big.warc", [response("http://f.example/big", big, 1),
                                               response("http://f.example/small", PAGE, 2)])
    rs = rows(path, max_record_mb=1)
    assert "over input.max_record_mb = 1" in rs[0]["_error"] and rs[1]["_error"] is None


def test_trafilatura_is_the_other_extractor():
    pytest.importorskip("trafilatura",
                        reason="input.warc_extractor = trafilatura needs trafilatura (the dev and bench extras)")
    path = next(WARC_SAMPLE.glob("*.warc.gz"))
    ours, theirs = rows(path), rows(path, warc_extractor="trafilatura")
    assert [r["id"] for r in ours] == [r["id"] for r in theirs]
    assert all(r["_error"] is None and r["text"] for r in theirs)
    # trafilatura keeps less boilerplate: its text of the home page is shorter, and both share the main paragraph
    assert len(theirs[0]["text"]) < len(ours[0]["text"])
    assert "international nonprofit organization" in theirs[0]["text"] and \
        "international nonprofit organization" in ours[0]["text"]
    with pytest.raises(Exception, match="input.warc_extractor must be one of resiliparse, trafilatura"):
        InputConfig(warc_extractor="boilerpipe")


@pytest.mark.slow
def test_ray_jobs_clean_on_a_warc_folder_carries_the_url_and_counts_every_record(ray_local, tmp_path):
    from ray_jobs.cli import main as cli_main

    src = tmp_path / "crawl"
    shutil.copytree(WARC_SAMPLE, src)
    write_warc(src / "extra.warc.gz", [response("http://g.example/logo.png", b"\x89PNG", 1, "image/png"),
                                       response("http://g.example/", PAGE, 2)])
    out = tmp_path / "run"
    assert cli_main(["clean", "--input", str(src), "--output", str(out), "--set", "ray.progress_bars=false",
                     "--set", "clean.allowed_langs=[]"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    clean = stats["stages"]["clean"]
    assert clean["rows_in"] == 6 and clean["quarantined"] == 1 and stats["invariant_ok"] is True
    table = pads.dataset(out / "clean", format="parquet", partitioning="hive").to_table()
    by_url = {r["url"]: r for r in table.to_pylist()}
    assert set(by_url) == {*SAMPLE_URLS, "http://g.example/logo.png", "http://g.example/"}
    assert by_url["http://g.example/logo.png"]["status"] == "quarantined"
    assert {by_url[u]["http_status"] for u in SAMPLE_URLS} == {200}
