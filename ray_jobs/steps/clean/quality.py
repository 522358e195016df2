"""Document quality heuristics: one drop reason per row, or null to keep it.

Each rule is a small function over a column that returns a boolean "fails" mask.
`drop_reasons` runs the enabled rules in `REASONS` order (cheap rules first) and only
hands a rule the rows that passed every rule before it, so a row carries the FIRST
reason it fails. Words are whitespace-split tokens; lines split on "\\n" and are
stripped, blank lines ignored; paragraphs split on blank lines.

Thresholds follow Gopher (Rae et al. 2021, "Scaling Language Models", appendix A.1.1,
table A1) unless a comment on the config field says otherwise.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REASONS: tuple[str, ...] = (
    "empty",
    "too_short",
    "too_long",
    "char_repetition",
    "avg_word_length",
    "non_ascii_ratio",
    "symbol_ratio",
    "bullet_lines",
    "ellipsis_lines",
    "duplicate_lines",
    "duplicate_paragraphs",
    "top_ngram_repetition",
    "no_stop_words",
)

# A line is a bullet when it opens with a bullet glyph, or with an ASCII/typographic list
# marker followed by a space ("- item", "* item"); "--" rules and "-5" numbers are not.
_BULLET_START = r"^(?:[•·‣⁃◦▪▫●○■□◆◇►▸➢➤✓✔]|[-*+–—]\s)"
_ELLIPSIS_END = r"(?:\.\.\.|…)$"
_ELLIPSIS = r"\.\.\.|…"
_NON_ASCII = r"[^\x00-\x7F]"
_PUNCTUATION = "\"'`.,;:!?()[]{}<>«»“”‘’-–—_*"


@dataclass(frozen=True)
class QualityConfig:
    # Gopher keeps documents of 50 to 100,000 words: below that there is too little
    # context to learn from, above it the "document" is usually a dump or a concatenation.
    min_words: int = 50
    max_words: int = 100_000
    # A run longer than this of one identical non-whitespace character fails (11+, i.e.
    # regex (\S)\1{10,}): "!!!!!!!!!!!", "===========" rules, "aaaaaaaaaaa" keyboard mash.
    # Whitespace runs are excluded: indentation and column alignment are layout, not content.
    max_char_run: int = 10
    # Gopher keeps a mean word length of 3-10 characters; the product spec widens it to
    # [2, 15] because our tokens include URLs, code and long compounds (German, Finnish);
    # the band still drops base64/hex dumps (>15) and letter-spaced text (<2).
    min_avg_word_len: float = 2.0
    max_avg_word_len: float = 15.0
    # Share of non-ASCII among the non-whitespace characters (indentation and blank lines
    # would dilute it). English prose is ~0-1 % non-ASCII (curly quotes, dashes, accented
    # names); above 30 % an "en" row is mojibake or another script. Applied only to the
    # languages in ascii_langs: other languages legitimately use other scripts.
    max_non_ascii_ratio: float = 0.3
    ascii_langs: tuple[str, ...] = ("en",)
    # Gopher: drop when '#' or ellipses ('...' / '…') exceed 0.1 per word (either one):
    # hashtag lists and teaser/summary pages.
    max_symbol_word_ratio: float = 0.1
    # Gopher: more than 90 % of (non-blank) lines starting with a bullet is a list/menu page.
    max_bullet_line_frac: float = 0.9
    # Gopher: more than 30 % of lines ending in an ellipsis is truncated teaser text.
    max_ellipsis_line_frac: float = 0.3
    # Gopher: duplicate lines above 30 % of lines, or above 20 % of the line characters,
    # mark boilerplate (repeated navigation, signatures, table rows).
    max_dup_line_frac: float = 0.30
    max_dup_line_char_frac: float = 0.20
    # Gopher: the same limits for paragraphs (split on blank lines).
    max_dup_para_frac: float = 0.30
    max_dup_para_char_frac: float = 0.20
    # Gopher: the most frequent word n-gram may cover at most 20 % (2-gram), 18 % (3-gram)
    # and 16 % (4-gram) of the word characters; more is a chant, a list or spam.
    max_top_ngram_char_frac: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # Gopher: real English has at least 2 of these words; fewer means tables, code or
    # keyword lists. English words, so applied only to rows whose lang is stop_words_lang.
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")
    min_stop_words: int = 2
    stop_words_lang: str = "en"
    enabled: tuple[str, ...] = REASONS

    def __post_init__(self) -> None:
        unknown = [name for name in self.enabled if name not in REASONS]
        if unknown:
            raise ValueError(
                f"QualityConfig.enabled: expected rule names from {list(REASONS)}, "
                f"found unknown {unknown}; fix: drop them or use one of the valid names"
            )
        for low, high in (("min_words", "max_words"), ("min_avg_word_len", "max_avg_word_len")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"QualityConfig: expected {low} <= {high}, found {getattr(self, low)} > "
                    f"{getattr(self, high)}; fix: swap or widen them"
                )
        fractions = {
            "max_non_ascii_ratio": self.max_non_ascii_ratio,
            "max_bullet_line_frac": self.max_bullet_line_frac,
            "max_ellipsis_line_frac": self.max_ellipsis_line_frac,
            "max_dup_line_frac": self.max_dup_line_frac,
            "max_dup_line_char_frac": self.max_dup_line_char_frac,
            "max_dup_para_frac": self.max_dup_para_frac,
            "max_dup_para_char_frac": self.max_dup_para_char_frac,
            **{f"max_top_ngram_char_frac[{n}]": f for n, f in self.max_top_ngram_char_frac},
        }
        outside = {name: value for name, value in fractions.items() if not 0 <= value <= 1}
        if outside:
            raise ValueError(
                f"QualityConfig: expected fractions in [0, 1], found {outside}; "
                f"fix: give them as fractions (0.3), not percentages (30)"
            )


# ---- column helpers -------------------------------------------------------------------


def _words(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """All whitespace-split words of the column, flattened, and the row of each word."""
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text))
    flat, rows = pc.list_flatten(lists), pc.list_parent_indices(lists)
    keep = pc.not_equal(pc.utf8_length(flat), 0)  # "" is what splitting "" gives
    return flat.filter(keep), rows.filter(keep).to_numpy()


def _pieces(text: pa.Array, separator: str) -> tuple[pa.Array, np.ndarray]:
    """Non-blank, stripped pieces of each row split on a regex, and the row of each."""
    lists = pc.split_pattern_regex(text, separator)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    keep = pc.not_equal(pc.utf8_length(flat), 0)
    return flat.filter(keep), pc.list_parent_indices(lists).filter(keep).to_numpy()


def _per_row(rows: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(rows, weights=weights, minlength=n).astype(np.float64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (nothing to judge)."""
    out = np.zeros(len(numerator))
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _ints(values: pa.Array) -> np.ndarray:
    return values.to_numpy(zero_copy_only=False).astype(np.float64)


def _word_counts(text: pa.Array) -> np.ndarray:
    return _per_row(_words(text)[1], len(text))


def _line_fraction(text: pa.Array, pattern: str) -> np.ndarray:
    lines, rows = _pieces(text, r"\n")
    hits = pc.match_substring_regex(lines, pattern).to_numpy(zero_copy_only=False)
    return _ratio(_per_row(rows[hits], len(text)), _per_row(rows, len(text)))


def _duplicate_fractions(pieces: pa.Array, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: fraction of pieces that repeat an earlier piece, and of their characters."""
    lengths = pc.utf8_length(pieces)
    groups = (
        pa.table({"row": rows, "piece": pieces, "length": lengths})
        .group_by(["row", "piece"])
        .aggregate([("length", "count"), ("length", "max")])
    )
    row = groups["row"].to_numpy()
    repeats = groups["length_count"].to_numpy() - 1
    dup_chars = repeats * groups["length_max"].to_numpy()
    frac = _ratio(_per_row(row, n, repeats), _per_row(rows, n))
    char_frac = _ratio(_per_row(row, n, dup_chars), _per_row(rows, n, _ints(lengths)))
    return frac, char_frac


def _in_langs(lang: pa.Array, langs: tuple[str, ...]) -> np.ndarray:
    hits = pc.is_in(lang, value_set=pa.array(langs, pa.string()))
    return pc.fill_null(hits, False).to_numpy(zero_copy_only=False)


# ---- rules: (text, lang, cfg) -> bool mask of rows that fail ----------------------------


def _empty(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0).to_numpy(zero_copy_only=False)


def _too_short(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _word_counts(text) < cfg.min_words


def _too_long(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _word_counts(text) > cfg.max_words


def _char_repetition(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    # Back-references are beyond RE2 (Arrow's regex engine), so this one runs per row.
    run = re.compile(r"(\S)\1{%d,}" % cfg.max_char_run)
    return np.array([run.search(t) is not None for t in text.to_pylist()], dtype=bool)


def _avg_word_length(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    words, rows = _words(text)
    chars = _per_row(rows, len(text), _ints(pc.utf8_length(words)))
    counts = _per_row(rows, len(text))
    mean = _ratio(chars, counts)
    return (counts > 0) & ((mean < cfg.min_avg_word_len) | (mean > cfg.max_avg_word_len))


def _non_ascii_ratio(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    non_ascii = _ints(pc.count_substring_regex(text, _NON_ASCII))
    visible = _ints(pc.utf8_length(text)) - _ints(pc.count_substring_regex(text, r"\s"))
    ratio = _ratio(non_ascii, visible)
    return _in_langs(lang, cfg.ascii_langs) & (ratio > cfg.max_non_ascii_ratio)


def _symbol_ratio(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    words = _word_counts(text)
    hashes = _ratio(_ints(pc.count_substring(text, "#")), words)
    ellipses = _ratio(_ints(pc.count_substring_regex(text, _ELLIPSIS)), words)
    return (hashes > cfg.max_symbol_word_ratio) | (ellipses > cfg.max_symbol_word_ratio)


def _bullet_lines(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _line_fraction(text, _BULLET_START) > cfg.max_bullet_line_frac


def _ellipsis_lines(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _line_fraction(text, _ELLIPSIS_END) > cfg.max_ellipsis_line_frac


def _duplicate_lines(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    frac, char_frac = _duplicate_fractions(*_pieces(text, r"\n"), len(text))
    return (frac > cfg.max_dup_line_frac) | (char_frac > cfg.max_dup_line_char_frac)


def _duplicate_paragraphs(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    frac, char_frac = _duplicate_fractions(*_pieces(text, r"\n\s*\n"), len(text))
    return (frac > cfg.max_dup_para_frac) | (char_frac > cfg.max_dup_para_char_frac)


def _top_ngram_exceeds(words: list[str], limits: tuple[tuple[int, float], ...]) -> bool:
    """Does the most frequent n-gram (ties: the longest) cover too many word characters?"""
    total = sum(map(len, words))
    for n, limit in limits:
        counts = Counter(zip(*(words[k:] for k in range(n))))
        top = max(counts.values(), default=0)
        if top < 2:  # nothing repeats
            continue
        chars = max(sum(map(len, gram)) for gram, count in counts.items() if count == top)
        if top * chars > limit * total:
            return True
    return False


def _top_ngram_repetition(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    word_lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(text)).to_pylist()
    limits = cfg.max_top_ngram_char_frac
    return np.array([_top_ngram_exceeds(w, limits) for w in word_lists], dtype=bool)


def _no_stop_words(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    words, rows = _words(text)
    bare = pc.utf8_lower(pc.utf8_trim(words, characters=_PUNCTUATION))
    hits = pc.is_in(bare, value_set=pa.array(cfg.stop_words, pa.string())).to_numpy(zero_copy_only=False)
    found = _per_row(rows[hits], len(text))
    return _in_langs(lang, (cfg.stop_words_lang,)) & (found < cfg.min_stop_words)


_RULES = {
    "empty": _empty,
    "too_short": _too_short,
    "too_long": _too_long,
    "char_repetition": _char_repetition,
    "avg_word_length": _avg_word_length,
    "non_ascii_ratio": _non_ascii_ratio,
    "symbol_ratio": _symbol_ratio,
    "bullet_lines": _bullet_lines,
    "ellipsis_lines": _ellipsis_lines,
    "duplicate_lines": _duplicate_lines,
    "duplicate_paragraphs": _duplicate_paragraphs,
    "top_ngram_repetition": _top_ngram_repetition,
    "no_stop_words": _no_stop_words,
}


def _string_column(values: pa.Array | pa.ChunkedArray, name: str) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array) or not (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    ):
        found = values.type if isinstance(values, pa.Array) else type(values).__name__
        raise TypeError(
            f"drop_reasons: expected `{name}` as a pyarrow string array, found {found}; "
            f"fix: pass the column itself, e.g. pa.array(values, pa.string())"
        )
    return values


def drop_reasons(
    text: pa.Array | pa.ChunkedArray, lang: pa.Array | pa.ChunkedArray, cfg: QualityConfig
) -> pa.Array:
    """The first failing rule per row (a string from REASONS), or null to keep the row.

    `lang` is the row's language code (null = unknown: the language-gated rules skip it).
    A null text counts as empty.
    """
    text = pc.fill_null(_string_column(text, "text"), "")
    lang = _string_column(lang, "lang")
    if len(text) != len(lang):
        raise ValueError(
            f"drop_reasons: expected `text` and `lang` of equal length, found {len(text)} "
            f"and {len(lang)}; fix: pass the two columns of the same batch"
        )
    codes = np.full(len(text), -1, dtype=np.int8)
    pending = np.arange(len(text))
    for code, reason in enumerate(REASONS):
        if reason not in cfg.enabled or pending.size == 0:
            continue
        rows = pa.array(pending)
        fails = _RULES[reason](text.take(rows), lang.take(rows), cfg)
        codes[pending[fails]] = code
        pending = pending[~fails]
    return pa.array(REASONS, pa.string()).take(pa.array(codes, mask=codes < 0))
