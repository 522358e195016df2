"""C4's line filters (Raffel et al. 2020, section 2.2): they edit the text, removing the lines that look like web
boilerplate, and count what they removed per row. The document rules that go with them (lorem ipsum, a curly
bracket, too few sentences left) are quality rules (quality.py) judged on the edited text.

Lines split on "\\n" and are judged stripped; blank lines are layout (paragraph breaks), never removed nor counted.
One pass over the flattened lines of the whole column (pyarrow compute), no Python per row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.steps.clean.quality import LINE_END_PUNCTUATION


@dataclass(frozen=True)
class C4LinesConfig:
    # Off by default: C4's filters are for web pages. On the sample (books, e-mails) they removed 83 % of the
    # non-blank lines (53,937 of 64,972: every hard-wrapped book line and e-mail line without a full stop), see
    # benchmarks/RESULTS.md "Clean rules"; turn them on for crawled web text.
    enabled: bool = False
    # C4: a line needs at least 3 words (menu items, buttons, "Share this" are shorter); 0 turns the test off.
    min_words_per_line: int = 3
    # C4: a line must end in terminal punctuation (. ! ? " and, as FineWeb counts it, ' and an ellipsis).
    terminal_punctuation: bool = True
    # C4: a line mentioning "javascript" is a "please enable JavaScript" notice.
    javascript: bool = True
    # C4: cookie and legal notices, matched case-insensitively anywhere in the line.
    policy_phrases: tuple[str, ...] = (
        "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

    def __post_init__(self) -> None:
        if self.min_words_per_line < 0:
            raise ValueError(f"clean.c4_lines.min_words_per_line: expected a count >= 0, found "
                             f"{self.min_words_per_line}; fix: 3 (C4) or 0 to keep short lines")


def filter_lines(text: pa.Array, cfg: C4LinesConfig) -> tuple[pa.Array, pa.Array]:
    """(the text without the lines C4 removes, the number of lines removed per row as int32). Null stays null."""
    lists = pc.split_pattern(text, "\n")
    flat, rows = pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy()
    line = pc.utf8_trim_whitespace(flat)
    remove = np.zeros(len(flat), dtype=bool)
    if cfg.min_words_per_line:
        words = pc.list_value_length(pc.utf8_split_whitespace(line)).to_numpy(zero_copy_only=False)
        remove |= words < cfg.min_words_per_line
    if cfg.terminal_punctuation:
        remove |= ~pc.match_substring_regex(line, LINE_END_PUNCTUATION).to_numpy(zero_copy_only=False)
    if cfg.javascript:
        remove |= pc.match_substring(line, "javascript", ignore_case=True).to_numpy(zero_copy_only=False)
    if cfg.policy_phrases:
        pattern = "|".join(re.escape(p) for p in cfg.policy_phrases)
        remove |= pc.match_substring_regex(line, pattern, ignore_case=True).to_numpy(zero_copy_only=False)
    remove &= pc.not_equal(pc.utf8_length(line), 0).to_numpy(zero_copy_only=False)  # blank lines stay
    keep = ~remove
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=len(text)))]).astype(np.int32)
    kept_lines = pa.ListArray.from_arrays(pa.array(offsets), flat.filter(pa.array(keep)))
    joined = pc.binary_join(kept_lines, pa.scalar("\n", flat.type))
    # blank lines left next to each other by a removed line fold into one paragraph break, as normalize does
    edited = pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, r"\n\s*\n(?:\s*\n)+", "\n\n"))
    edited = pc.if_else(pc.is_valid(text), edited, text)
    removed = pa.array(np.bincount(rows[remove], minlength=len(text)).astype(np.int32))
    return edited, removed
