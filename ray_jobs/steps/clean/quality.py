"""Document quality heuristics: one drop reason per row, or null to keep it.

Each rule is a small function over a column that returns a boolean "fails" mask.
`drop_reasons` runs the enabled rules in `REASONS` order (cheap rules first) and only
hands a rule the rows that passed every rule before it, so a row carries the FIRST
reason it fails. Words are whitespace-split tokens; lines split on "\\n" and are
stripped, blank lines ignored; paragraphs split on blank lines.

Thresholds follow Gopher (Rae et al. 2021, "Scaling Language Models", appendix A.1.1,
table A1), C4's document rules (Raffel et al. 2020, section 2.2) and FineWeb's extra filters
(Penedo et al. 2024, section 3.3) as a comment on each config field says. C4's line filters,
which edit the text rather than drop it, are in lines.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REASONS: tuple[str, ...] = (
    "empty",
    "too_short",
    "too_long",
    "char_repetition",
    "lorem_ipsum",
    "curly_bracket",
    "avg_word_length",
    "alpha_words",
    "non_ascii_ratio",
    "symbol_ratio",
    "bullet_lines",
    "ellipsis_lines",
    "duplicate_lines",
    "duplicate_paragraphs",
    "duplicate_line_chars",
    "line_punctuation",
    "short_lines",
    "list_like",
    "too_few_sentences",
    "top_ngram_repetition",
    "duplicate_ngrams",
    "no_stop_words",
)

# Off by default: web-only rules that drop ordinary books and mail. Alone on the sample (1,567 documents: books,
# e-mails) curly_bracket drops 38 (17 ham: code and shell lines in mail), line_punctuation 409 (54 of the 333 books:
# hard-wrapped prose ends few lines in punctuation), list_like 117 (21 ham), too_few_sentences 415 (153 ham; C4
# counts sentences after its line filters, lines.py, and goes with them). benchmarks/RESULTS.md "Clean rules".
DEFAULT_OFF: tuple[str, ...] = ("curly_bracket", "line_punctuation", "list_like", "too_few_sentences")

# A line is a bullet when it opens with a bullet glyph, or with an ASCII/typographic list
# marker followed by a space ("- item", "* item"); "--" rules and "-5" numbers are not.
_BULLET_START = r"^(?:[•·‣⁃◦▪▫●○■□◆◇►▸➢➤✓✔]|[-*+–—]\s)"
_ELLIPSIS_END = r"(?:\.\.\.|…)$"
_ELLIPSIS = r"\.\.\.|…"
_NON_ASCII = r"[^\x00-\x7F]"
# FineWeb's line-ending punctuation (datatrove's stop characters) plus the ellipsis; a closing bracket or quote
# after it still counts.
LINE_END_PUNCTUATION = r"[.!?\"'…][\"'”’)\]]*$"
# A sentence ends in a run of . ! ? (or an ellipsis), maybe closed by a quote or bracket, before whitespace or the
# end; "e.g." and "3.5" are not ends because no whitespace follows the inner dots.
_SENTENCE_END = r"[.!?…]+[\"'”’)\]]*(?:\s|$)"
_PUNCTUATION = "\"'`.,;:!?()[]{}<>«»“”‘’-–—_*"


@dataclass(frozen=True)
class QualityConfig:
    # Gopher keeps documents of 50 to 100,000 words: below that there is too little
    # context to learn from, above it the "document" is usually a dump or a concatenation.
    min_words: int = 50
    max_words: int = 100_000
    # char_repetition counts runs of more than max_char_run (10) equal non-whitespace characters ("!!!!!!!!!!!",
    # "===========" rules, "aaaaaaaaaaa" keyboard mash); whitespace runs are layout, not content. mode "share"
    # drops a document when such runs hold more than max_char_run_share of its non-whitespace characters; mode
    # "run" is the seed's rule (one run anywhere drops it), which dropped 322 of the sample's 1,567 documents, the
    # four inspected e-mails (three ham) for one separator line or an ASCII-art signature. A 76-character rule
    # line in a 500-character e-mail is a 0.15 share, so 0.3 keeps such mail and still drops ASCII art and
    # keyboard-mash spam, where the runs are most of the text.
    max_char_run: int = 10
    char_repetition_mode: str = "share"
    max_char_run_share: float = 0.3
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
    # FineWeb: characters in duplicated lines above 10 % of the line characters (Gopher's 20 % above is the
    # lenient twin; FineWeb found the stricter value better on web text: paper section 3.3).
    max_dup_line_char_share: float = 0.10
    # FineWeb: fewer than 12 % of the (non-blank) lines ending in . ! ? " ' or an ellipsis is a menu, a table or
    # a list of links.
    min_punct_line_frac: float = 0.12
    # FineWeb: more than 67 % of the lines of at most 30 characters is a list or navigation.
    short_line_chars: int = 30
    max_short_line_frac: float = 0.67
    # FineWeb's "list ratio": more than 0.3 newlines per word is one or two words a line, a list.
    max_newline_word_ratio: float = 0.3
    # C4 (Raffel et al. 2020): fewer than 5 sentences (a "." "!" or "?" run before whitespace or the end) is not
    # a document; C4 counts them after its line filters (lines.py), so the two go together.
    min_sentences: int = 5
    # Gopher: at least 80 % of the words must contain an alphabetic character (any script: RE2's \pL); below it
    # the row is numbers, tables or symbols. Tokens of punctuation and symbols only (">" quote marks) are not
    # counted as words.
    min_alpha_word_frac: float = 0.8
    # Gopher: the most frequent word n-gram may cover at most 20 % (2-gram), 18 % (3-gram)
    # and 16 % (4-gram) of the word characters; more is a chant, a list or spam.
    max_top_ngram_char_frac: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # Gopher: the word characters covered by repeats of a 5- to 10-gram seen earlier in the document may be at
    # most 15 % (5-gram) down to 10 % (10-gram); more is copy-pasted blocks or spun text.
    max_dup_ngram_char_frac: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    # Gopher: real English has at least 2 of these words; fewer means tables, code or
    # keyword lists. English words, so applied only to rows whose lang is stop_words_lang.
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")
    min_stop_words: int = 2
    stop_words_lang: str = "en"
    enabled: tuple[str, ...] = tuple(r for r in REASONS if r not in DEFAULT_OFF)

    def __post_init__(self) -> None:
        if self.char_repetition_mode not in ("share", "run"):
            raise ValueError(
                f"QualityConfig.char_repetition_mode: expected \"share\" or \"run\", found "
                f"{self.char_repetition_mode!r}; fix: \"share\" (a share of the characters) or \"run\" (any run)"
            )
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
            "max_char_run_share": self.max_char_run_share,
            "max_dup_line_char_share": self.max_dup_line_char_share,
            "min_punct_line_frac": self.min_punct_line_frac,
            "max_short_line_frac": self.max_short_line_frac,
            "min_alpha_word_frac": self.min_alpha_word_frac,
            **{f"max_top_ngram_char_frac[{n}]": f for n, f in self.max_top_ngram_char_frac},
            **{f"max_dup_ngram_char_frac[{n}]": f for n, f in self.max_dup_ngram_char_frac},
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
        .group_by(["row", "piece"], use_threads=False)
        .aggregate([("length", "count"), ("length", "max")])
    )
    row = groups["row"].to_numpy()
    repeats = groups["length_count"].to_numpy() - 1
    dup_chars = repeats * groups["length_max"].to_numpy()
    frac = _ratio(_per_row(row, n, repeats), _per_row(rows, n))
    char_frac = _ratio(_per_row(row, n, dup_chars), _per_row(rows, n, _ints(lengths)))
    return frac, char_frac


def _long_runs(text: pa.Array, longer_than: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Runs of more than `longer_than` equal non-whitespace code points: ((start, length) in the column's code
    points, each row's start offset). Back-references are beyond RE2, so the column's UTF-8 is decoded once into
    one array of code points and the runs found with numpy, with no Python per row."""
    lengths = _ints(pc.utf8_length(text)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    one_list = pa.ListArray.from_arrays(pa.array([0, len(text)], pa.int32()), text)
    joined = pc.binary_join(one_list, pa.scalar("", text.type))[0].as_py()
    points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    same = points[1:] == points[:-1]  # same[i]: point i+1 repeats point i
    last = starts[1:-1] - 1  # each row's last point: a run never crosses two rows
    same[last[(last >= 0) & (last < len(same))]] = False
    repeat = np.flatnonzero(same)  # few: most characters differ from the one before
    breaks = np.flatnonzero(np.diff(repeat) != 1) + 1
    run_start = repeat[np.concatenate([[0], breaks])] if len(repeat) else repeat
    run_len = np.diff(np.concatenate([[0], breaks, [len(repeat)]])) + 1 if len(repeat) else repeat
    run_start, run_len = run_start[run_len > longer_than], run_len[run_len > longer_than]
    visible = ~np.isin(points[run_start], _WHITESPACE)
    return (run_start[visible], run_len[visible]), starts


# Code points that are whitespace (Python's str.isspace over the BMP), excluded from runs: layout, not content.
_WHITESPACE = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


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
    runs, starts = _long_runs(text, cfg.max_char_run)
    rows = np.searchsorted(starts, runs[0], side="right") - 1
    fails = _per_row(rows, len(text)) > 0
    if cfg.char_repetition_mode == "run" or not fails.any():
        return fails
    hit = np.flatnonzero(fails)  # most rows have no run: count whitespace only where one is
    hit_text = text.take(pa.array(hit))
    visible = _ints(pc.utf8_length(hit_text)) - _ints(pc.count_substring_regex(hit_text, r"\s"))
    fails[hit] = _ratio(_per_row(rows, len(text), runs[1].astype(np.float64))[hit], visible) > cfg.max_char_run_share
    return fails


def _lorem_ipsum(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    # C4: placeholder text anywhere means a template page
    return pc.match_substring(text, "lorem ipsum", ignore_case=True).to_numpy(zero_copy_only=False)


def _curly_bracket(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    # C4: a "{" anywhere is taken for code (and drops JSON, LaTeX and templated mail with it)
    return pc.match_substring(text, "{").to_numpy(zero_copy_only=False)


def _alpha_words(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    words, rows = _words(text)
    # tokens of punctuation and symbols only (e-mail quote marks ">", "--" signature lines, "|" table rules) are
    # layout, not words: counted, they dropped 27 ordinary quoted e-mails of the sample's 508 ham
    alpha = pc.match_substring_regex(words, r"\pL").to_numpy(zero_copy_only=False)
    real = alpha.copy()  # a word has a letter or a digit; the second regex runs only on the few without a letter
    real[~alpha] = pc.match_substring_regex(words.filter(pa.array(~alpha)), r"\pN").to_numpy(zero_copy_only=False)
    counts = _per_row(rows[real], len(text))
    return (counts > 0) & (_ratio(_per_row(rows[alpha], len(text)), counts) < cfg.min_alpha_word_frac)


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


def _duplicate_line_chars(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _duplicate_fractions(*_pieces(text, r"\n"), len(text))[1] > cfg.max_dup_line_char_share


def _line_punctuation(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _line_fraction(text, LINE_END_PUNCTUATION) < cfg.min_punct_line_frac


def _short_lines(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _line_fraction(text, r"^.{0,%d}$" % cfg.short_line_chars) > cfg.max_short_line_frac


def _list_like(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    newlines = _ints(pc.count_substring(text, "\n"))
    return _ratio(newlines, _word_counts(text)) > cfg.max_newline_word_ratio


def _too_few_sentences(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    return _ints(pc.count_substring_regex(text, _SENTENCE_END)) < cfg.min_sentences


def _word_ids(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per word of the column: an integer id (equal words, equal ids), its row and its length in characters."""
    words, rows = _words(text)
    return pc.dictionary_encode(words).indices.to_numpy().astype(np.uint64), rows, _ints(pc.utf8_length(words))


def _ngram_keys(ids: np.ndarray, rows: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the starts whose n-gram lies inside one row, a 64-bit key per such n-gram: a rolling hash of its word ids
    with the row mixed in, wrapping; equal keys are equal n-grams of one row, a collision is ~2^-64 a pair)."""
    starts = starts[starts + n <= len(ids)]
    starts = starts[rows[starts] == rows[starts + n - 1]]
    key = rows[starts].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for k in range(n):
        key = key * np.uint64(1_000_003) + ids[starts + k]
    return starts, key


def _top_ngram_repetition(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    """Does the most frequent n-gram (ties: the one with the most characters) cover too many word characters?"""
    ids, rows, lengths = _word_ids(text)
    totals = _per_row(rows, len(text), lengths)
    chars = np.concatenate([[0], np.cumsum(lengths)])  # chars[j] - chars[i]: characters of words i..j-1
    fails = np.zeros(len(text), dtype=bool)
    for n, limit in cfg.max_top_ngram_char_frac:
        starts, key = _ngram_keys(ids, rows, np.arange(len(ids)), n)
        order = np.argsort(key)
        group = np.flatnonzero(np.append(True, key[order][1:] != key[order][:-1]))  # each distinct n-gram
        count = np.diff(np.append(group, len(order)))
        first = starts[order[group[count >= 2]]]  # an n-gram seen once is never the top one of a failing row
        count = count[count >= 2]
        if len(first) == 0:
            continue
        gram_rows, gram_chars = rows[first], chars[first + n] - chars[first]
        # per row, the last after sorting by (row, count, characters) is its top n-gram
        order = np.lexsort((gram_chars, count, gram_rows))
        top = order[np.append(gram_rows[order][1:] != gram_rows[order][:-1], True)]
        row = gram_rows[top]
        fails[row] |= count[top] * gram_chars[top] > limit * totals[row]
    return fails


def _duplicate_ngrams(text: pa.Array, lang: pa.Array, cfg: QualityConfig) -> np.ndarray:
    """Gopher's duplicate n-gram character fractions, over the whole column at once: each word becomes an integer
    id, each n-gram a rolling hash of n ids (uint64, wrapping; with the row mixed in), a stable sort finds the
    n-grams seen earlier in the same row, and a difference array marks the words their repeats cover."""
    ids, rows, lengths = _word_ids(text)
    totals = _per_row(rows, len(text), lengths)
    fails = np.zeros(len(text), dtype=bool)
    starts = np.arange(len(ids))
    for n, limit in sorted(cfg.max_dup_ngram_char_frac):
        starts, key = _ngram_keys(ids, rows, starts, n)
        order = np.argsort(key, kind="stable")  # equal n-grams in text order: the first is not a repeat
        same = key[order][1:] == key[order][:-1]
        repeats = starts[order[1:][same]]
        cover = np.bincount(repeats, minlength=len(ids) + n) - np.bincount(repeats + n, minlength=len(ids) + n)
        covered = np.cumsum(cover[: len(ids)]) > 0
        fails |= _ratio(_per_row(rows[covered], len(text), lengths[covered]), totals) > limit
        # an (n+1)-gram repeats only where its leading n-gram does: the next round sorts only those
        in_group = np.zeros(len(starts), dtype=bool)
        in_group[order[1:][same]] = in_group[order[:-1][same]] = True
        starts = starts[in_group]
    return fails


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
    "lorem_ipsum": _lorem_ipsum,
    "curly_bracket": _curly_bracket,
    "avg_word_length": _avg_word_length,
    "alpha_words": _alpha_words,
    "non_ascii_ratio": _non_ascii_ratio,
    "symbol_ratio": _symbol_ratio,
    "bullet_lines": _bullet_lines,
    "ellipsis_lines": _ellipsis_lines,
    "duplicate_lines": _duplicate_lines,
    "duplicate_paragraphs": _duplicate_paragraphs,
    "duplicate_line_chars": _duplicate_line_chars,
    "line_punctuation": _line_punctuation,
    "short_lines": _short_lines,
    "list_like": _list_like,
    "too_few_sentences": _too_few_sentences,
    "top_ngram_repetition": _top_ngram_repetition,
    "duplicate_ngrams": _duplicate_ngrams,
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
