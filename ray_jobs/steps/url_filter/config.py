"""The url_filter step's settings: which block lists, which URL column."""

from __future__ import annotations

from dataclasses import dataclass

from ray_jobs.errors import UserError


@dataclass(frozen=True)
class UrlFilterConfig:
    # Block lists on local disk: a UT1-style folder (one sub-folder per category, each with a `domains` and/or a
    # `urls` file, one entry per line, `#` comments), one such category folder, or a plain file of domains. Empty
    # and no inline entries below: the step is off in a whole run (`ray-jobs url_filter` alone says what to set).
    lists: tuple[str, ...] = ()
    # Categories of a UT1-style folder to use (e.g. ["adult", "phishing"]); empty = every category found. UT1 also
    # has categories most corpora keep (news, sports, jobsearch...), so naming them is usually what one wants.
    categories: tuple[str, ...] = ()
    # Inline entries, besides the files: domains (each blocks that host and its subdomains) and URL substrings
    # (each blocks a URL that contains it anywhere, case-insensitively).
    domains: tuple[str, ...] = ()
    url_substrings: tuple[str, ...] = ()
    # The rows' URL column (dolma's Common Crawl JSONL keeps the URL as its `id`: url_column = "id"). A row whose
    # URL is null is kept: there is nothing to match.
    url_column: str = "url"
    # Every row gets this column: the category that blocked it (a UT1 folder's name, a plain file's stem, "inline"),
    # null when nothing matched, so RUN/url_filter/status=url_blocked says which list dropped each row. "" = none.
    match_column: str = "url_block_list"

    def __post_init__(self) -> None:
        if not self.url_column:
            raise UserError("url_filter.url_column is empty: name the column that holds each row's URL (e.g. url)")

    @property
    def enabled(self) -> bool:
        return bool(self.lists or self.domains or self.url_substrings)
