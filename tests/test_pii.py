"""PII redaction (steps/clean/pii.py): positives and look-alikes that must stay, the sample's real e-mails, and the
clean stage (rules judge the text as written, every written row is redacted, quarantine untouched)."""

import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import PARQUET

from ray_jobs.config import load_config
from ray_jobs.steps.clean.ops import CleanStage
from ray_jobs.steps.clean.pii import PiiConfig, redact

ALL = PiiConfig(redact=("email", "ip", "phone"))


def _redact(texts, cfg=ALL):
    out, counts = redact(pa.array(texts, pa.string()), cfg)
    return out.to_pylist(), counts.to_pylist()


@pytest.mark.parametrize("text, expected, n", [
    ("Rick Moen <rick@linuxmafia.com> wrote:", "Rick Moen <<EMAIL>> wrote:", 1),
    ("Write to jm+lists@jmason.org.", "Write to <EMAIL>.", 1),
    ('<a href="mailto:cheech@inbox.lv">', '<a href="mailto:<EMAIL>">', 1),
    ("a.b@mail.example.co.uk, c_d@x.ie", "<EMAIL>, <EMAIL>", 2),
    ("Alex Russell\nalex@netWindows.org\tpaul@jakma.org", "Alex Russell\n<EMAIL>\t<EMAIL>", 2),
    ("the server at 192.168.1.10 answered", "the server at <IP_ADDRESS> answered", 1),
    ("ping 8.8.8.8.", "ping <IP_ADDRESS>.", 1),
    ("Click here:\nhttp://202.101.163.34:81/li/wan", "Click here:\nhttp://<IP_ADDRESS>:81/li/wan", 1),
    ("http://www.9107361497@61.129.81.74/bp/", "http://www.9107361497@<IP_ADDRESS>/bp/", 1),
    ("from 2001:db8:85a3::8a2e:370:7334 today", "from <IP_ADDRESS> today", 1),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "full <IP_ADDRESS>", 1),
    ("call (212) 555-0143 or +44 20 7946 0958", "call <PHONE> or <PHONE>", 2),
])
def test_addresses_are_replaced_and_counted(text, expected, n):
    assert _redact([text]) == ([expected], [n])


@pytest.mark.parametrize("text", [
    "Upgrade to version 2.4.1.0 of the kernel",  # a version number with a version word
    "Release 1.2.3.4 is out; SpamAssassin 2.4.1.0.5 too",  # and with a fifth part
    "Build v1.2.3.4 passed",
    "10.0.0.256 is not an address (an octet over 255)",
    "std::vector and a::b::c, the time 12:30:45 and fe80::1",  # C++ scopes, times, link-local
    "On 2002-08-13, invoice 20020813123 for $1,299.99 (id 555123)",  # dates, ids, prices
    "In 1999 and 2002 we sold 1,000,000 copies; call extension 4021",
    "user@localhost and @handle and a@b",  # no domain with a dot: not an address a mail server routes
])
def test_look_alikes_stay(text):
    assert _redact([text]) == ([text], [0])


def test_kinds_placeholders_and_off():
    text = ["mail jm@jmason.org from 10.1.2.3 or (212) 555-0143"]
    assert _redact(text, PiiConfig())[0] == ["mail <EMAIL> from <IP_ADDRESS> or (212) 555-0143"]  # phone opt-in
    assert _redact(text, PiiConfig(redact=("email",), email_placeholder="[email]"))[0] == [
        "mail [email] from 10.1.2.3 or (212) 555-0143"]
    assert _redact(text, PiiConfig(enabled=False)) == (text, [0])
    assert _redact([None, ""]) == ([None, ""], [0, 0])
    with pytest.raises(ValueError, match="expected kinds from"):
        PiiConfig(redact=("emails",))
    with pytest.raises(ValueError, match="backslash"):
        PiiConfig(ip_placeholder=r"\1")


# An independent check with Python's re (look-arounds, which RE2 lacks): an e-mail address or a dotted quad with
# valid octets that is not part of a longer dotted number.
_LEFT_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
_LEFT_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                        r"(?![\w]|\.\d)")


def test_sample_emails_are_left_without_addresses():
    table = pq.read_table(PARQUET, columns=["text", "label"])
    mail = table.filter(pc.is_in(table["label"], pa.array(["spam", "ham"])))["text"].combine_chunks()
    out, counts = redact(mail, PiiConfig())
    assert pc.sum(counts).as_py() >= pc.sum(pc.count_substring_regex(mail, "@")).as_py() // 2
    leftover = [m for t in out.to_pylist() for m in _LEFT_EMAIL.findall(t)]
    assert leftover == []
    versions = re.compile(r"(?i)(?:version|ver\.?|release|build|v\.?)\s*$")
    for before, after in zip(mail.to_pylist(), out.to_pylist()):
        for m in _LEFT_IPV4.finditer(after):
            assert versions.search(after[: m.start()]), after[max(0, m.start() - 40): m.end() + 10]
        # nothing but the addresses changed: the text outside the placeholders is the text as written
        assert re.sub(r"<EMAIL>|<IP_ADDRESS>", "", after) == re.sub(
            _LEFT_EMAIL.pattern + "|" + _LEFT_IPV4.pattern, "", before)


def test_clean_stage_judges_the_original_and_writes_redacted_rows():
    prose = ("The meeting moved to Thursday, so please send the agenda to the whole team before then and "
             "remind everyone that the room on the second floor is booked from ten until noon. If anyone needs "
             "a video link for the call, I will set one up and share it with the rest of the group in the morning. ")
    table = pa.table({"id": ["kept", "short", "bad"],
                      "text": [prose + "Questions to anna.berg@example.org.", "mail bob@example.org", "c@d.org"],
                      "_error": [None, None, "f @ 3: bad"]})
    out = CleanStage(load_config(None, ["clean.allowed_langs=[]"]).clean)(table)
    assert out["status"].to_pylist() == ["kept", "too_short", "quarantined"]
    assert out["text"].to_pylist() == [prose.rstrip() + " Questions to <EMAIL>.", "mail <EMAIL>", "c@d.org"]
    assert out["pii_redacted"].to_pylist() == [1, 1, 0]
