"""Block lists from local files into compact lookup tables, built once per worker (UrlFilterStage.setup).

Domains are kept as the xxh3-64 hashes of their normalised hosts in a pandas hash index: for UT1's `adult` list
(~4.6 M domains) that is ~180 MB per worker and 4 s to build, against ~580 MB and 10 s for an index of the strings
and a 0.9 s rebuild of Arrow's hash table on every `pc.is_in` call (benchmarks/RESULTS.md). Two different domains
share a hash with probability ~2^-64 per pair: with 4.6 M entries a looked-up host is wrongly blocked with
probability ~2.5e-13.

URL substrings are found by their first KEY characters: every KEY-character window of a URL is looked up in a
dict of the entries' heads, and only an entry whose head is there is compared, so the cost per URL is its length,
whatever the list's size. An RE2 alternation of the literals (pc.match_substring_regex) was tried first: 300 us per
URL for 1,000 entries (RE2 leaves its DFA for such a program), 20x slower than the whole domain lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError
from ray_jobs.steps.dedup.exact import text_hashes
from ray_jobs.steps.url_filter.config import UrlFilterConfig

DOMAINS, URLS = "domains", "urls"  # a UT1 category folder's two files
INLINE = "inline"  # the category of url_filter.domains / url_substrings
# Head length of a URL-substring entry: UT1's url entries are host/path strings, nearly all longer than this;
# a shorter entry is matched by one Arrow pass of its own (pc.match_substring).
KEY = 8

# Scheme (optional, only with "//"), user info, then the host: a bracketed IPv6 literal or everything up to the
# port, path, query or fragment. Lower-cased first, so the scheme needs no upper case. Bare entries of a domains
# file ("example.com", "example.com:8080/x") go through the same expression as the rows' URLs.
_HOST = r"^\s*(?:(?:[a-z][a-z0-9+.\-]*:)?//)?(?:[^/?#@\s]*@)?(?P<host>\[[^\]]*\]|[^/?#:\s]*)"


def hosts(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """URL -> its host, lower case, without a trailing dot or a leading `www.`; null where there is none. The
    full expression (~2 us a value) runs only where a scheme, port, path or user info can be: a plain domain, as
    in the lists, is its own host (UT1 adult's 4.6 M lines: 1.5 s instead of 9 s)."""
    low = pc.utf8_lower(urls.combine_chunks() if isinstance(urls, pa.ChunkedArray) else urls)
    needs = pc.fill_null(pc.match_substring_regex(low, r"[:/?#@\s\[]"), False)
    if pc.any(needs).as_py():
        found = pc.struct_field(pc.extract_regex(pc.filter(low, needs), _HOST), [0])
        low = pc.replace_with_mask(low, needs, found)
    host = pc.utf8_rtrim(low, ".")
    host = pc.if_else(pc.starts_with(host, "www."), pc.utf8_slice_codeunits(host, 4), host)
    return pc.if_else(pc.equal(host, ""), pa.scalar(None, pa.string()), host)


def parent(host: pa.Array) -> pa.Array:
    """`a.b.example.com` -> `b.example.com`; null where no dot is left (the last label has no parent)."""
    stripped = pc.replace_substring_regex(host, r"^[^.]*\.", "", max_replacements=1)
    return pc.if_else(pc.match_substring(host, "."), stripped, pa.scalar(None, pa.string()))


@dataclass(frozen=True)
class BlockLists:
    categories: tuple[str, ...]
    domain_index: pd.Index  # xxh3-64 of each normalised domain, unique
    domain_category: np.ndarray  # int32: the category (position in `categories`) of each index entry
    heads: dict[str, tuple[tuple[str, int], ...]]  # first KEY characters -> (lower-cased entry, category)
    short: tuple[tuple[str, int], ...]  # entries shorter than KEY, with their category

    def domain_codes(self, host: pa.Array) -> np.ndarray:
        """The category of each host found in the domain list, -1 elsewhere (null hosts included)."""
        pos = self.domain_index.get_indexer(text_hashes(host, lowercase=False))
        codes = np.where(pos >= 0, self.domain_category[np.maximum(pos, 0)], -1).astype(np.int32)
        codes[np.asarray(pc.is_null(host))] = -1
        return codes

    def substring_codes(self, urls: pa.Array, codes: np.ndarray) -> np.ndarray:
        """`codes` (the domain matches) with the category of a listed substring for each URL still at -1: the
        short entries first, then the first entry found from the start of the URL."""
        codes = codes.copy()
        lower = pc.utf8_lower(urls)
        for entry, code in self.short:
            hit = np.asarray(pc.fill_null(pc.match_substring(lower, entry), False))
            codes = np.where((codes < 0) & hit, code, codes)
        if not self.heads:
            return codes
        get = self.heads.get
        for row in np.flatnonzero(codes < 0):
            url = lower[int(row)].as_py()
            if url is not None:
                codes[row] = next((code for i in range(len(url) - KEY + 1) for entry, code in get(url[i:i + KEY], ())
                                   if url.startswith(entry, i)), -1)
        return codes


def _read_entries(path: Path) -> pa.Array:
    """One entry per line; blank lines and `#` comments skipped. Split in Arrow, never as a Python list: UT1's adult
    list is 4.6 M lines. A compressed or binary file is refused: read as text it would block nothing, silently."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b" or b"\x00" in data[:65536]:
        raise UserError(f"block list {path} is not a text file (gzip or binary data); url_filter.lists expects "
                        "plain files of one domain or URL per line: extract the archive (UT1 ships "
                        "blacklists.tar.gz) and point at the folder")
    text = data.decode("utf-8", errors="replace")
    del data
    lines = pc.utf8_trim_whitespace(pc.list_flatten(pc.split_pattern(pa.array([text], pa.large_string()), "\n")))
    return pc.cast(pc.filter(lines, pc.and_(pc.not_equal(lines, ""), pc.invert(pc.starts_with(lines, "#")))),
                   pa.string())


def _hashes(domains: pa.Array) -> np.ndarray:
    """xxh3-64 of each domain, 256 k at a time: text_hashes makes a Python bytes object per value."""
    step = 1 << 18
    parts = [text_hashes(domains.slice(i, step), lowercase=False) for i in range(0, len(domains), step)]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def _sources(cfg: UrlFilterConfig) -> list[tuple[str, Path | None, Path | None]]:
    """(category, domains file, urls file) of every configured list."""
    found: list[tuple[str, Path | None, Path | None]] = []
    for spec in cfg.lists:
        p = Path(spec)
        if p.is_file():
            found.append((p.stem, p, None))
            continue
        if not p.is_dir():
            raise UserError(f"url_filter.lists: {spec} is neither a file nor a folder; give a UT1-style folder "
                            "(<folder>/<category>/domains), a category folder or a file of domains")
        folders = [p] if (p / DOMAINS).is_file() or (p / URLS).is_file() else sorted(
            d for d in p.iterdir() if d.is_dir() and ((d / DOMAINS).is_file() or (d / URLS).is_file()))
        if not folders:
            raise UserError(f"url_filter.lists: folder {spec} holds no `{DOMAINS}` or `{URLS}` file, in itself or in a "
                            "sub-folder; expected the UT1 layout <folder>/<category>/domains")
        found += [(d.name, d / DOMAINS if (d / DOMAINS).is_file() else None,
                   d / URLS if (d / URLS).is_file() else None) for d in folders]
    if cfg.categories:
        missing = sorted(set(cfg.categories) - {name for name, _, _ in found})
        if missing:
            raise UserError(f"url_filter.categories {missing} not found in url_filter.lists; categories there: "
                            f"{', '.join(sorted({n for n, _, _ in found})) or 'none'}")
        found = [s for s in found if s[0] in cfg.categories]
    return found


def load_block_lists(cfg: UrlFilterConfig) -> BlockLists:
    names: list[str] = []
    domain_parts: list[pa.Array] = []
    domain_codes: list[np.ndarray] = []
    heads: dict[str, list[tuple[str, int]]] = {}
    short: list[tuple[str, int]] = []
    empty = pa.array([], pa.string())
    sources = [(n, _read_entries(d) if d else empty, _read_entries(u) if u else empty) for n, d, u in _sources(cfg)]
    if cfg.domains or cfg.url_substrings:
        sources.append((INLINE, pa.array(cfg.domains, pa.string()), pa.array(cfg.url_substrings, pa.string())))
    for name, domains, urls in sources:
        code = names.index(name) if name in names else len(names)
        if code == len(names):
            names.append(name)
        normalised = pc.drop_null(hosts(domains))
        domain_parts.append(normalised)
        domain_codes.append(np.full(len(normalised), code, np.int32))
        for entry in pc.unique(pc.utf8_lower(urls)).to_pylist():
            if len(entry) < KEY:
                short.append((entry, code))
            else:
                heads.setdefault(entry[:KEY], []).append((entry, code))
    hashes = _hashes(pa.concat_arrays(domain_parts) if domain_parts else pa.array([], pa.string()))
    codes = np.concatenate(domain_codes) if domain_codes else np.zeros(0, np.int32)
    # a domain listed twice (in two categories too) is kept once, under the first category that lists it
    unique, first = np.unique(hashes, return_index=True)
    pa.default_memory_pool().release_unused()  # the lines and hosts above are gone: give their pages back
    return BlockLists(tuple(names), pd.Index(unique), codes[first], {k: tuple(v) for k, v in heads.items()},
                      tuple(short))
