"""The url_filter stage: drop rows whose URL is on a block list, before clean spends language ID on them.

A domain entry blocks its host and every subdomain (`example.com` blocks `ads.example.com`, not
`notexample.com`): each row's host and each of its parents (`a.b.example.com`, `b.example.com`, `example.com`,
`com`) are looked up in the domain list, all rows at once per level. A URL-substring entry blocks every URL that
contains it, case-insensitively. The most specific domain match names the category, else the first substring
found. A null URL is kept; rows another step already dropped or quarantined keep their status.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.base import Stage
from ray_jobs.steps.url_filter.config import UrlFilterConfig
from ray_jobs.steps.url_filter.lists import BlockLists, hosts, load_block_lists, parent

URL_BLOCKED = "url_blocked"


def block_codes(urls: pa.Array, lists: BlockLists) -> np.ndarray:
    """The category that blocks each URL, -1 where none does."""
    codes = np.full(len(urls), -1, np.int32)
    host = hosts(urls)
    while pc.any(pc.is_valid(host)).as_py():
        found = lists.domain_codes(host)
        codes = np.where(codes < 0, found, codes)  # the most specific level that matches names the category
        host = parent(host)
    return lists.substring_codes(urls, codes) if lists.heads or lists.short else codes


class UrlFilterStage(Stage):
    stateful = True  # the block lists load once per worker (UT1 adult: ~4 s, ~180 MB)

    def __init__(self, cfg: UrlFilterConfig) -> None:
        self.cfg = cfg
        self._lists: BlockLists | None = None

    def setup(self) -> None:
        if not self.cfg.enabled:
            raise UserError("url_filter has no block list: set url_filter.lists (UT1-style folders or files of "
                            "domains), url_filter.domains or url_filter.url_substrings")
        self._lists = load_block_lists(self.cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._lists is None:
            self.setup()
        assert self._lists is not None
        col = self.cfg.url_column
        if col not in table.column_names:
            raise UserError(f"url_filter expects a URL column {col!r}; the rows have {table.column_names}. Set "
                            "url_filter.url_column to the column that holds each page's URL (dolma's Common Crawl "
                            "JSONL: id), or leave url_filter's lists empty to turn the step off")
        urls = table[col].combine_chunks() if len(table) else pa.array([], pa.string())
        if pa.types.is_null(urls.type):  # a JSONL batch whose records all have "url": null
            urls = urls.cast(pa.string())
        if not (pa.types.is_string(urls.type) or pa.types.is_large_string(urls.type)):
            raise UserError(f"url_filter.url_column {col!r} must hold strings; it is {urls.type}. Name a text "
                            "column of URLs")
        codes = block_codes(urls, self._lists)
        status = table[schema.STATUS] if schema.STATUS in table.column_names else schema.initial_status(table)
        blocked = pc.and_(pc.equal(status, schema.KEPT), pa.array(codes >= 0))
        table = schema.set_status(table, pc.if_else(blocked, URL_BLOCKED, status))
        if self.cfg.match_column:
            names = pa.array(self._lists.categories, pa.string())
            matched = names.take(pa.array(codes, mask=codes < 0)) if len(names) else pa.nulls(len(codes), pa.string())
            if self.cfg.match_column in table.column_names:
                table = table.drop_columns([self.cfg.match_column])
            table = table.append_column(self.cfg.match_column, matched)
        return table
