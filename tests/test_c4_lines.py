"""C4's line filters (steps/clean/lines.py) on real text: the sample's e-mails (SpamAssassin, in the project) and
CCNet web documents from ../shared/data, and through the clean stage (kept rows edited, dropped rows whole)."""

import gzip
import json
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import PARQUET

from ray_jobs.config import load_config
from ray_jobs.steps.clean.lines import C4LinesConfig, filter_lines
from ray_jobs.steps.clean.normalize import NormalizeConfig, normalize_text
from ray_jobs.steps.clean.ops import CleanStage
from ray_jobs.steps.clean.quality import LINE_END_PUNCTUATION

# A web page as a text extractor leaves it (made up for the test, in the shape of a local news site).
PAGE = """\
Home | News | Sport | Contact
Please enable JavaScript to view the comments powered by our partner.
The county council has agreed to reopen the footbridge over the railway next month, after repairs to the
steel frame took almost a year longer than planned.
Residents had complained that the detour added twenty minutes to the walk to the station.
Read more

Councillors said the final cost was close to the original budget, despite the delay.
This site uses cookies to improve your experience.
By using this site you agree to our Terms of Use and Privacy Policy.
© 2024 Valley News"""


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.split("\n") if line.strip()]


def test_a_web_page_loses_its_boilerplate_lines_and_keeps_its_sentences():
    edited, removed = filter_lines(pa.array([PAGE, None, ""]), C4LinesConfig())
    assert edited.to_pylist() == [
        "steel frame took almost a year longer than planned.\n"
        "Residents had complained that the detour added twenty minutes to the walk to the station.\n\n"
        "Councillors said the final cost was close to the original budget, despite the delay.",
        None, ""]
    # removed: the menu, the JavaScript notice, the hard-wrapped first line of the article (no full stop: C4 is
    # for unwrapped web text), "Read more", the cookie and the terms lines, the copyright line
    assert removed.to_pylist() == [7, 0, 0]


def test_each_rule_can_be_turned_off():
    cfg = C4LinesConfig(min_words_per_line=0, terminal_punctuation=False, javascript=False, policy_phrases=())
    edited, removed = filter_lines(pa.array([PAGE]), cfg)
    assert edited.to_pylist() == [PAGE] and removed.to_pylist() == [0]
    edited, _ = filter_lines(pa.array([PAGE]), C4LinesConfig(terminal_punctuation=False, min_words_per_line=0))
    assert "JavaScript" not in edited[0].as_py() and "cookies" not in edited[0].as_py()
    assert "Read more" in edited[0].as_py()


def _check_invariants(original: pa.Array, cfg: C4LinesConfig) -> pa.Array:
    """Every line kept passes every rule; kept + removed = the non-blank lines; order is preserved."""
    edited, removed = filter_lines(original, cfg)
    for before, after, n in zip(original.to_pylist(), edited.to_pylist(), removed.to_pylist()):
        kept = _lines(after)
        assert len(kept) + n == len(_lines(before))
        for line in kept:
            assert len(line.split()) >= cfg.min_words_per_line
            assert re.search(LINE_END_PUNCTUATION, line)
            assert "javascript" not in line.lower() and "privacy policy" not in line.lower()
        lines = iter(_lines(before))
        assert all(any(line == other for other in lines) for line in kept)  # a subsequence of the original
    return removed


def test_on_the_sample_emails_every_kept_line_passes_and_the_counts_add_up():
    table = pq.read_table(PARQUET, columns=["text", "label"])
    mail = normalize_text(table.filter(pc.is_in(table["label"], pa.array(["spam", "ham"])))["text"],
                          NormalizeConfig()).combine_chunks()
    removed = _check_invariants(mail, C4LinesConfig())
    # e-mail is not web text: most lines are hard-wrapped or short, which is why the filters are off by default
    assert pc.sum(removed).as_py() > 0.5 * sum(len(_lines(t)) for t in mail.to_pylist())


def test_ccnet_web_documents_keep_their_lines(shared_data):
    files = sorted((shared_data / "web_samples_dolma" / "multiple_files").glob("*.jsonl.gz"))
    if not files:
        pytest.skip("web_samples_dolma/multiple_files not in ../shared/data")
    texts = pa.array([json.loads(line)["text"] for f in files for line in gzip.open(f, "rt")])
    removed = _check_invariants(texts, C4LinesConfig())
    # CCNet already kept only lines that read as prose: C4's filters find (almost) nothing left to remove
    assert pc.sum(removed).as_py() <= 0.05 * sum(len(_lines(t)) for t in texts.to_pylist())


def test_clean_stage_keeps_edited_text_drops_whole_documents_and_counts_lines():
    cfg = load_config(None, ["clean.c4_lines.enabled=true", "clean.quality.min_words=20"]).clean
    menu = "Home | News | Sport | Contact\nLogin\nSearch"
    table = pa.table({"id": ["page", "menu", "bad"], "text": [PAGE, menu, "x"], "_error": [None, None, "f @ 1: bad"]})
    out = CleanStage(cfg)(table)
    assert out["status"].to_pylist() == ["kept", "too_few_sentences", "quarantined"]
    assert out["c4_lines_removed"].to_pylist() == [7, 3, 0]
    assert out["text"][0].as_py().startswith("steel frame") and "cookies" not in out["text"][0].as_py()
    assert out["text"][1].as_py() == menu  # a dropped row is written as it was judged bad: whole
    assert out["text"][2].as_py() == "x"
