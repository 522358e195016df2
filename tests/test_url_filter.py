"""url_filter: domain and URL-substring block lists (UT1 layout, plain files, inline) on the real Common Crawl URLs
of tests/fixtures/web_cc, checked against a plain-Python reference (urllib's host, a loop over parent domains)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pytest

from ray_jobs import schema
from ray_jobs.config import load_config
from ray_jobs.errors import UserError
from ray_jobs.planner import describe
from ray_jobs.steps.url_filter.config import UrlFilterConfig
from ray_jobs.steps.url_filter.ops import URL_BLOCKED, UrlFilterStage

WEB_CC = Path(__file__).parent / "fixtures" / "web_cc"


def cc_urls() -> list[str]:
    urls = []
    for f in sorted(WEB_CC.glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            urls += [json.loads(line)["metadata"]["url"] for line in fh]
    return urls


def reference_category(url: str | None, domains: dict[str, str], substrings: dict[str, str]) -> str | None:
    """The plain-Python reading of the rules: urllib's host, minus `www.`; the host or its nearest listed parent."""
    if url is None:
        return None
    host = (urlsplit(url if "//" in url else "//" + url).hostname or "").rstrip(".").removeprefix("www.")
    labels = host.split(".")
    for i in range(len(labels)):
        if ".".join(labels[i:]) in domains:
            return domains[".".join(labels[i:])]
    return next((cat for s, cat in substrings.items() if s in url.lower()), None)


def ut1(root: Path) -> Path:
    """A UT1-layout folder: blog/ (domains + urls, with comments) and finance/ (domains), plus a plain file."""
    (root / "blog").mkdir(parents=True)
    (root / "blog" / "domains").write_text("# UT1 style comment\nblogspot.com\n\nwww.captainthin.net\n")
    (root / "blog" / "urls").write_text("911blogger.com/news/\n")
    (root / "finance").mkdir()
    (root / "finance" / "domains").write_text("100kinvesting.com\ngetty.edu\nvesting.com\n")
    return root


def url_table(urls: list[str | None]) -> pa.Table:
    return pa.table({schema.ID: [f"r{i}" for i in range(len(urls))], schema.TEXT: ["t"] * len(urls), "url": urls})


def test_blocks_hosts_subdomains_and_substrings_like_the_reference(tmp_path):
    lists = ut1(tmp_path / "ut1")
    urls = cc_urls() + [
        "https://WWW.BlogSpot.com./x",  # upper case, www, trailing dot
        "http://notblogspot.com/",  # a suffix of the string, not a parent domain: kept
        "cempaka-tourist.blogspot.com/2012/01/",  # no scheme
        "http://archives2.getty.edu:8082/x?y=1",  # a port
        "http://user:pw@sub.captainthin.net/",  # user info, and www.captainthin.net listed
        "HTTP://911BLOGGER.COM/NEWS/2006",  # the urls entry, in upper case
        None,
    ]
    out = UrlFilterStage(UrlFilterConfig(lists=(str(lists),)))(url_table(urls))
    domains = {"blogspot.com": "blog", "captainthin.net": "blog", "100kinvesting.com": "finance",
               "getty.edu": "finance", "vesting.com": "finance"}
    expected = [reference_category(u, domains, {"911blogger.com/news/": "blog"}) for u in urls]
    assert out["url_block_list"].to_pylist() == expected
    assert out[schema.STATUS].to_pylist() == [URL_BLOCKED if e else schema.KEPT for e in expected]
    # real URLs of the fixture that the lists reach: 4 blogspot pages, blog.captainthin.net, 100kinvesting, getty's
    # archive and the 911blogger news page
    assert sum(e is not None for e in expected[:20]) == 8
    assert expected[-7:] == ["blog", None, "blog", "finance", "blog", "blog", None]


def test_categories_plain_files_and_inline_entries(tmp_path):
    lists = ut1(tmp_path / "ut1")
    plain = tmp_path / "extra.txt"
    plain.write_text("akindleinhongkong.blogspot.com\n")
    urls = cc_urls()
    cfg = UrlFilterConfig(lists=(str(lists), str(plain)), categories=("finance", "extra"), domains=("9crimes.org",),
                          url_substrings=("/tag/",))
    out = UrlFilterStage(cfg)(url_table(urls))
    expected = [reference_category(u, {"100kinvesting.com": "finance", "getty.edu": "finance", "vesting.com": "finance",
                                       "akindleinhongkong.blogspot.com": "extra", "9crimes.org": "inline"},
                                   {"/tag/": "inline"}) for u in urls]
    assert out["url_block_list"].to_pylist() == expected
    assert sorted(c for c in expected if c) == ["extra", "finance", "finance", "inline", "inline"]
    # one category folder given directly works too; its name is the category
    direct = UrlFilterStage(UrlFilterConfig(lists=(str(lists / "finance"),), match_column=""))(url_table(urls))
    assert "url_block_list" not in direct.column_names
    assert direct[schema.STATUS].to_pylist().count(URL_BLOCKED) == 2


def test_statuses_accounting_and_a_null_url(tmp_path):
    urls = cc_urls()
    before = ["too_short"] * 3 + [schema.KEPT] * 16 + [schema.QUARANTINED]
    table = url_table(urls).append_column(schema.STATUS, pa.array(before))
    out = UrlFilterStage(UrlFilterConfig(domains=("blogspot.com", "100kinvesting.com")))(table)
    status = out[schema.STATUS].to_pylist()
    # 100kinvesting (row 0) was already too_short and the last blogspot page quarantined: both keep their status
    assert status[:3] == ["too_short"] * 3 and status[-1] == schema.QUARANTINED and len(status) == len(urls)
    assert status.count(URL_BLOCKED) == 3 and status.count(schema.KEPT) == 13
    # raw reader rows without a status: the reader's quarantine holds, a null URL is kept
    raw = url_table([None, "http://x.blogspot.com/", None]).append_column(schema.ERROR, pa.array([None, None, "bad"]))
    out = UrlFilterStage(UrlFilterConfig(domains=("blogspot.com",)))(raw)
    assert out[schema.STATUS].to_pylist() == [schema.KEPT, URL_BLOCKED, schema.QUARANTINED]
    # a JSONL batch whose URLs are all null has a column of Arrow type null: kept, not an error
    nulls = pa.table({schema.ID: ["a", "b"], "url": pa.nulls(2)})
    assert UrlFilterStage(UrlFilterConfig(domains=("blogspot.com",)))(nulls)[schema.STATUS].to_pylist() == ["kept"] * 2


def test_bad_lists_and_a_missing_url_column_are_user_errors(tmp_path):
    def run(cfg, table=None):
        return UrlFilterStage(cfg)(table if table is not None else url_table(["http://a.com/"]))

    with pytest.raises(UserError, match="neither a file nor a folder"):
        run(UrlFilterConfig(lists=(str(tmp_path / "nope"),)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no `domains` or `urls` file"):
        run(UrlFilterConfig(lists=(str(tmp_path / "empty"),)))
    packed = tmp_path / "blacklists.gz"
    packed.write_bytes(gzip.compress(b"example.com\n"))
    with pytest.raises(UserError, match="not a text file"):
        run(UrlFilterConfig(lists=(str(packed),)))
    with pytest.raises(UserError, match=r"categories \['adult'\] not found.*blog, finance"):
        run(UrlFilterConfig(lists=(str(ut1(tmp_path / "ut1")),), categories=("adult",)))
    with pytest.raises(UserError, match="url_filter.url_column"):
        run(UrlFilterConfig(domains=("a.com",)), pa.table({schema.ID: ["x"], schema.TEXT: ["t"]}))
    with pytest.raises(UserError, match="must hold strings"):
        run(UrlFilterConfig(domains=("a.com",)), pa.table({schema.ID: ["x"], "url": [3]}))
    with pytest.raises(UserError, match="no block list"):
        run(UrlFilterConfig())


def test_off_without_lists_and_fused_with_clean_when_on():
    assert "url_filter" not in describe(load_config(None, []))
    on = describe(load_config(None, ['url_filter.domains=["example.com"]']))
    assert on.splitlines()[0].startswith("pass 1: text pass (fused row steps): url_filter -> clean")
    assert len(on.splitlines()) == len(describe(load_config(None, [])).splitlines())
