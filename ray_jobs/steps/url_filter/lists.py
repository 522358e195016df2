"""Block lists from local files into compact lookup tables, built once per worker (UrlFilterStage.setup).

Domains are kept as the xxh3-64 hashes of their normalised hosts in a pandas hash index: for UT1's `adult` list
(~4.6 M domains) that is ~180 MB per worker and 4 s to build, against ~580 MB and 10 s for an index of the strings
and a 0.9 s rebuild of Arrow's hash table on every `pc.is_in` call (benchmarks/RESULTS.md). Two different domains
share a hash with probability ~2^-64 per pair: with 4.6 M entries a looked-up host is wrongly blocked with
probability ~2.5e-13. URL substrings are RE2 alternations of escaped literals.
"""

from __future__ import annotations

import re
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

# Scheme (optional, only with "//"), user info, then the host: a bracketed IPv6 literal or everything up to the
# port, path, query or fragment. Lower-cased first, so the scheme needs no upper case. Bare entries of a domains
# file ("example.com", "example.com:8080/x") go through the same expression as the rows' URLs.
_HOST = r"^\s*(?:(?:[a-z][a-z0-9+.\-]*:)?//)?(?:[^/?#@\s]*@)?(?P<host>\[[^\]]*\]|[^/?#:\s]*)"


def hosts(urls: pa.Array | pa.ChunkedArray) -> pa.Array:
    """URL -> its host, lower case, without a trailing dot or a leading `www.`; null where there is none."""
    host = pc.struct_field(pc.extract_regex(pc.utf8_lower(urls), _HOST), [0])
    host = pc.replace_substring_regex(pc.replace_substring_regex(host, r"\.+$", ""), r"^www\.", "")
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
    substring_regexes: tuple[tuple[int, str], ...]  # (category, RE2 alternation of lower-cased literals)
    substrings: int  # how many substring entries in all

    def domain_codes(self, host: pa.Array) -> np.ndarray:
        """The category of each host found in the domain list, -1 elsewhere (null hosts included)."""
        pos = self.domain_index.get_indexer(text_hashes(host, lowercase=False))
        codes = np.where(pos >= 0, self.domain_category[np.maximum(pos, 0)], -1).astype(np.int32)
        codes[np.asarray(pc.is_null(host))] = -1
        return codes


def _read_entries(path: Path) -> list[str]:
    """One entry per line; blank lines and `#` comments skipped. A compressed or binary file is refused: matched as
    text it would block nothing and say nothing."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b" or b"\x00" in data[:65536]:
        raise UserError(f"block list {path} is not a text file (gzip or binary data); url_filter.lists expects "
                        "plain files of one domain or URL per line: extract the archive (UT1 ships "
                        "blacklists.tar.gz) and point at the folder")
    lines = (line.strip() for line in data.decode("utf-8", errors="replace").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


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
    regexes: list[tuple[int, str]] = []
    substrings = 0
    sources = [(n, _read_entries(d) if d else [], _read_entries(u) if u else []) for n, d, u in _sources(cfg)]
    if cfg.domains or cfg.url_substrings:
        sources.append((INLINE, list(cfg.domains), list(cfg.url_substrings)))
    for name, domains, urls in sources:
        code = names.index(name) if name in names else len(names)
        if code == len(names):
            names.append(name)
        normalised = pc.drop_null(hosts(pa.array(domains, pa.string())))
        domain_parts.append(normalised)
        domain_codes.append(np.full(len(normalised), code, np.int32))
        literals = sorted({u.lower() for u in urls})
        substrings += len(literals)
        step = cfg.substrings_per_regex
        regexes += [(code, "|".join(re.escape(s) for s in literals[i:i + step])) for i in range(0, len(literals), step)]
    hashes = text_hashes(pa.chunked_array(domain_parts, pa.string()), lowercase=False)
    codes = np.concatenate(domain_codes) if domain_codes else np.zeros(0, np.int32)
    # a domain listed twice (in two categories too) is kept once, under the first category that lists it
    unique, first = np.unique(hashes, return_index=True)
    return BlockLists(tuple(names), pd.Index(unique), codes[first], tuple(regexes), substrings)
