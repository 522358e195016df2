"""PII redaction: e-mail addresses, IP addresses and (opt-in) phone numbers become placeholders, counted per row.

Everything is Arrow's RE2 over the whole column (`count_substring_regex`, then `replace_substring_regex`). RE2 has
no look-around, so a pattern carries the character before and after it as groups and puts them back: an address
glued to a digit, a letter or a dot on either side (`v1.2.3.4`, `1.2.3.4.5`, `x@y.com.` keeps its full stop) is
not one.

It runs after the quality decisions, on every row that is not quarantined: the rules judge the text as written
(a placeholder is not a word), and no row, kept or dropped, is written with the address in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KINDS = ("email", "ip", "phone")

_EMAIL = r"([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_HEX = r"[0-9A-Fa-f]{1,4}"
# the full form, or "::" with 3+ groups (2001:db8::7334): 2 groups ("a::b", "std::map" is not hex) would take C++
# scopes; "::1" and "fe80::1" are loopback and link-local, nobody's address
_IPV6 = rf"(?:{_HEX}:){{7}}{_HEX}|(?:{_HEX}:){{2,6}}(?::{_HEX}){{1,5}}|{_HEX}:(?::{_HEX}){{2,6}}"
# A phone number has separators: +CC then 6-12 digits in groups, or the North American (NNN) NNN-NNNN; a bare run
# of digits (an id, a year, a price) is never one, nor is an ISO date (4-2-2)
_PHONE = (r"(\+[1-9][0-9]{0,2}[ .-]?(?:\([0-9]{1,4}\)[ .-]?)?[0-9]{2,4}(?:[ .-][0-9]{2,4}){1,4}"
          r"|\(?[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4})")
# Before an IP address: not a word character (v1.2.3.4), a dot or a colon (an "@" is fine: spam hides hosts as
# "http://www.x@61.129.81.74/"); after it: none of those either, except a final full stop followed by a space or
# the end (the end of a sentence) and a port (":81"). Two IP addresses one character apart share that character:
# the second is missed (rare in text; a second pass would cost 20 % more). Before an e-mail address: not a character
# of its local part (a colon is fine: "mailto:"); after it nothing is needed, as its domain is matched greedily, so
# addresses one character apart ("a@b.org\nc@d.org", "<EMAIL>>c@d.org") are all found.
_BEFORE = r"(^|[^\w.:+\x{E000}])"
_BEFORE_EMAIL = r"(^|[^A-Za-z0-9._%+-])"
_AFTER = r"($|[^\w.:@]|\.(?:\s|$)|:[0-9])"
# a version number looks like an IPv4 address (Windows 10.0.19041.1 is caught by the dot rule, "version 2.4.1.0"
# is not): a version word before it marks it off
_VERSION = r"(?i)(\b(?:version|ver\.?|release|build|v\.?)\s*)([0-9])"
_GUARD = "\uE000"  # a private-use code point, marks version numbers for one pass; removed again after it


@dataclass(frozen=True)
class PiiConfig:
    # On by default for e-mail and IP addresses, as datatrove's and FineWeb's pipelines do: they are the PII that
    # crawled and mailed text is full of (1,074 in the sample's 1,034 e-mails), with patterns precise enough to
    # run unattended. Phone numbers are opt-in: every pattern that finds them also takes some part numbers and ids.
    enabled: bool = True
    redact: tuple[str, ...] = ("email", "ip")
    email_placeholder: str = "<EMAIL>"
    ip_placeholder: str = "<IP_ADDRESS>"
    phone_placeholder: str = "<PHONE>"

    def __post_init__(self) -> None:
        unknown = [k for k in self.redact if k not in KINDS]
        if unknown:
            raise ValueError(f"clean.pii.redact: expected kinds from {list(KINDS)}, found unknown {unknown}; "
                             f"fix: drop them or use one of the valid kinds")
        for kind in KINDS:
            placeholder = getattr(self, f"{kind}_placeholder")
            if "\\" in placeholder:
                raise ValueError(f"clean.pii.{kind}_placeholder: expected plain text, found a backslash in "
                                 f"{placeholder!r}; fix: leave backslashes out (they are regex group references)")


def redact(text: pa.Array, cfg: PiiConfig) -> tuple[pa.Array, pa.Array]:
    """(the text with each address replaced by its placeholder, the number of replacements per row as int32)."""
    counts = np.zeros(len(text), dtype=np.int64)
    if not cfg.enabled:
        return text, pa.array(counts.astype(np.int32))
    for kind in cfg.redact:
        if kind == "ip":
            text = pc.replace_substring_regex(text, _VERSION, rf"\1{_GUARD}\2")
            for address in (_IPV4, _IPV6):
                text, found = _replace(text, f"{_BEFORE}({address}){_AFTER}", cfg.ip_placeholder)
                counts += found
            text = pc.replace_substring(text, _GUARD, "")
        elif kind == "email":
            text, found = _replace(text, f"{_BEFORE_EMAIL}{_EMAIL}", cfg.email_placeholder)
            counts += found
        else:
            text, found = _replace(text, f"{_BEFORE}{_PHONE}{_AFTER}", cfg.phone_placeholder)
            counts += found
    return text, pa.array(counts.astype(np.int32))


def _replace(text: pa.Array, pattern: str, placeholder: str) -> tuple[pa.Array, np.ndarray]:
    """Group 1 is the character before the address, group 2 the address, group 3 (if any) the one after."""
    found = pc.fill_null(pc.count_substring_regex(text, pattern), 0).to_numpy(zero_copy_only=False)
    after = r"\3" if pattern.endswith(_AFTER) else ""
    return pc.replace_substring_regex(text, pattern, rf"\1{placeholder}{after}"), found
