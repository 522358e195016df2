"""The clean stage without Ray: decision order, language columns on every row, quarantine pass-through."""

import pyarrow as pa

from ray_jobs.config import CleanConfig, load_config
from ray_jobs.steps.clean.ops import CleanStage

# Public-domain prose (Mark Twain, Adventures of Huckleberry Finn, ch. 1) and a German sentence.
ENGLISH = (
    "You don't know about me without you have read a book by the name of The Adventures of Tom Sawyer; but that "
    "ain't no matter. That book was made by Mr. Mark Twain, and he told the truth, mainly. There was things which "
    "he stretched, but mainly he told the truth. That is nothing. I never seen anybody but lied one time or "
    "another, without it was Aunt Polly, or the widow, or maybe Mary. Aunt Polly, Tom's Aunt Polly, she is, and "
    "Mary, and the Widow Douglas is all told about in that book, which is mostly a true book, with some "
    "stretchers, as I said before."
)
GERMAN = "Der schnelle braune Fuchs springt über den faulen Hund und läuft danach weiter in den dunklen Wald hinein."


def _table(texts, errors=None):
    n = len(texts)
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": texts, "source": ["t"] * n,
                     "_offset": list(range(n)), "_error": errors or [None] * n})


def _run(cfg: CleanConfig, table: pa.Table) -> list[dict]:
    return CleanStage(cfg)(table).select(["id", "text", "status", "lang", "lang_score"]).to_pylist()


def test_order_of_decisions_and_language_on_every_row():
    rows = _run(CleanConfig(), _table([ENGLISH, GERMAN, "   ", "short text here", "raw bytes"],
                                      [None, None, None, None, "file @ 4: bad"]))
    assert [r["status"] for r in rows] == ["kept", "lang_not_allowed", "empty", "too_short", "quarantined"]
    assert [r["lang"] for r in rows] == ["en", "de", "und", "en", "und"]
    assert rows[0]["lang_score"] > 0.9 and rows[2]["lang_score"] == 0.0
    assert rows[4]["text"] == "raw bytes"  # the quarantine keeps the reader's snippet untouched


def test_normalisation_reaches_the_output_and_empty_allowed_langs_allows_all():
    cfg = load_config(None, ["clean.allowed_langs=[]", "clean.quality.min_words=5"]).clean
    rows = _run(cfg, _table(["  " + GERMAN.replace(" ", "\u00a0 \t", 3) + " \r\n\r\n\r\n"]))
    assert rows[0]["status"] == "kept" and rows[0]["text"] == GERMAN


def test_min_lang_score_marks_unsure_rows_undetermined_and_reclean_replaces_columns():
    cfg = load_config(None, ["clean.min_lang_score=1.01"]).clean
    once = CleanStage(CleanConfig())(_table([ENGLISH]))
    twice = CleanStage(cfg)(once.drop_columns(["status"]))
    assert twice.column_names.count("lang") == 1
    assert twice["lang"].to_pylist() == ["und"] and twice["status"].to_pylist() == ["lang_not_allowed"]


def test_stats_sum_lines_removed_and_pii_over_the_clean_folder(tmp_path):
    import pyarrow.parquet as pq

    from ray_jobs.rundir import RunDir
    from ray_jobs.steps.clean.spec import STEP

    cfg = load_config(None, ["clean.c4_lines.enabled=true", "clean.allowed_langs=[]"]).clean
    page = ENGLISH + "\nShare this\nThis site uses cookies. Read our privacy policy.\nMail us: tom@example.org."
    out = CleanStage(cfg)(_table([page, "Home\nNews\nContact us at ann@example.org", GERMAN]))
    assert out["status"].to_pylist() == ["kept", "too_few_sentences", "too_short"]
    run = RunDir(tmp_path)
    for status in ("kept", "too_few_sentences", "too_short"):
        (tmp_path / "clean" / f"status={status}").mkdir(parents=True)
        pq.write_table(out.filter(pa.compute.equal(out["status"], status)).drop_columns(["status"]),
                       tmp_path / "clean" / f"status={status}" / "part-0.parquet")
    # a file written before the columns existed adds nothing
    pq.write_table(_table([ENGLISH]), tmp_path / "clean" / "status=kept" / "part-old.parquet")
    stats = STEP.stats(run, {"rows_in": 4})
    assert stats["c4_lines_removed"] == sum(out["c4_lines_removed"].to_pylist()) == 2 + 3 + 0
    assert stats["pii_redacted"] == sum(out["pii_redacted"].to_pylist()) == 2
    assert out["text"][0].as_py() == ENGLISH + "\nMail us: <EMAIL>."  # the kept row: edited, then redacted
    assert "ann@example.org" not in out["text"][1].as_py()  # a dropped row is whole, but redacted
    # a clean fused into a later step keeps only its drops in its folder: no partial sums
    assert "pii_redacted" not in STEP.stats(run, {"rows_in": 4, "rows_out_counted": False})
