"""Unicode and whitespace normalisation over a whole text column (pyarrow compute, no per-row Python)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class NormalizeConfig:
    # NFC keeps compatibility characters (ligatures, full-width forms) as written; NFKC folds them, which also
    # changes meaning for some scripts, so it is opt-in.
    unicode_form: str = "NFC"
    collapse_whitespace: bool = True  # runs of spaces/tabs -> one space, 3+ newlines -> a paragraph break

    def __post_init__(self) -> None:
        forms = ("NFC", "NFKC", "NFD", "NFKD", "none")
        if self.unicode_form not in forms:
            raise ValueError(f"clean.normalize.unicode_form must be one of {', '.join(forms)}; "
                             f"got {self.unicode_form!r}")

# Control characters other than tab and newline (C0, DEL, C1), zero-width spaces and the BOM: invisible
# characters that break tokenisation and exact-duplicate hashing.
_INVISIBLE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\x{200b}\x{200c}\x{200d}\x{2060}\x{feff}]"
_HSPACE = r"[ \t\x{00a0}\x{1680}\x{2000}-\x{200a}\x{202f}\x{205f}\x{3000}]+"

def normalize_text(text: pa.Array | pa.ChunkedArray, cfg: NormalizeConfig) -> pa.Array | pa.ChunkedArray:
    """NFC (by default), CRLF -> LF, invisible characters removed, whitespace runs folded, ends trimmed.

    Paragraph structure survives: 3+ newlines become one blank line, because the Gopher duplicate-paragraph
    and line rules need it.
    """
    if cfg.unicode_form != "none":
        text = pc.utf8_normalize(text, form=cfg.unicode_form)
    text = pc.replace_substring(text, "\r\n", "\n")
    text = pc.replace_substring(text, "\r", "\n")
    text = pc.replace_substring_regex(text, _INVISIBLE, "")
    if cfg.collapse_whitespace:
        text = pc.replace_substring_regex(text, _HSPACE, " ")
        text = pc.replace_substring_regex(text, r" ?\n ?", "\n")
        text = pc.replace_substring_regex(text, r"\n{3,}", "\n\n")
    return pc.utf8_trim_whitespace(text)
