"""decontam: rows sharing a word n-gram with an eval item, on the sample corpus and a real eval set
(tests/data/decontam/: public-domain Gutenberg passages, some in the sample, some not). What each row should find
comes from a plain Python reference (sets of word tuples), never from a list of expected ids."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from ray_jobs import schema
from ray_jobs.cli import main as cli_main
from ray_jobs.config import InputConfig
from ray_jobs.errors import UserError
from ray_jobs.planner import describe
from ray_jobs.report.checks import PASS, WARN, run_checks
from ray_jobs.rundir import DROPS, ROWS, RunDir
from ray_jobs.rundir.stats import run_stats
from ray_jobs.steps.decontam.config import DecontamConfig
from ray_jobs.steps.decontam.index import load_index
from ray_jobs.steps.decontam.ops import CONTAMINATED, ITEM, NGRAMS, SET, DecontamStage
from ray_jobs.steps.decontam.spec import rows_by_set
from ray_jobs.steps.dedup.config import NearDedupConfig
from ray_jobs.steps.dedup.lsh import explode_bands
from ray_jobs.steps.leakage.ops import cross_split_pairs, leak_docs
from tests.conftest import PARQUET, REPO, sample_config
from tests.test_dedup_near import PARTS, _shuffle

EVAL_DIR = REPO / "tests" / "data" / "decontam"
EVAL_FILE = EVAL_DIR / "gutenberg_passages.jsonl"
EMBEDDED = [f"gutenberg-passages/{k}" for k in range(4)]  # the fixture's passages cut from sample documents


def _eval_items() -> list[dict]:
    return [json.loads(line) for line in EVAL_FILE.read_text().splitlines()]


def _sample() -> pa.Table:
    return pq.read_table(PARQUET, columns=["id", "text", "source"]).sort_by("id")


def _stage(**cfg) -> DecontamStage:
    dc = DecontamConfig(eval_paths=(str(EVAL_DIR),), **cfg)
    return DecontamStage(dc, load_index(dc, InputConfig()))


# --------------------------------------------------------------------------------------- the plain reference


def _words(text: str) -> list[str]:
    """GPT-3 / the harness's janitor: lower-case, delete punctuation and symbols, split on whitespace."""
    return "".join(c for c in text.lower() if unicodedata.category(c)[0] not in "PS").split()


def _reference(items: list[tuple[str, str]], texts: list[str], n: int = 13, min_words: int = 8):
    """Per row: (windows found, the item most of them belong to or None), with a dict of word tuples."""
    owner: dict[tuple, int] = {}
    short = set()
    for k, (_, text) in enumerate(items):
        w = _words(text)
        grams = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)] if len(w) >= n else (
            [tuple(w)] if len(w) >= min(min_words, n) else [])
        short |= {len(w)} if min_words <= len(w) < n else set()
        for g in grams:
            owner.setdefault(g, k)
    out = []
    for text in texts:
        w = _words(text or "")
        windows = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)] if len(w) >= n else ([tuple(w)] if w else [])
        for size in sorted(short):
            windows += [tuple(w[i:i + size]) for i in range(len(w) - size + 1)] if len(w) > size else []
        found = [owner[g] for g in windows if g in owner]
        best = min(Counter(found).items(), key=lambda kv: (-kv[1], kv[0]))[0] if found else None
        out.append((len(found), items[best][0] if best is not None else None))
    return out


# --------------------------------------------------------------------------------------- the stage


def test_matches_the_plain_reference_on_the_sample_and_finds_embedded_items():
    sample = _sample()
    items = _eval_items()
    out = _stage()(sample)
    want = _reference([(r["id"], r["text"]) for r in items], sample["text"].to_pylist())
    assert out[NGRAMS].to_pylist() == [h for h, _ in want]
    assert out[ITEM].to_pylist() == [i for _, i in want]
    # every passage cut from the middle of a sample document finds that document, named by its item
    found = dict(zip(out[schema.ID].to_pylist(), out[ITEM].to_pylist()))
    for r in items:
        if r["id"] in EMBEDDED or r["id"].endswith("short10"):
            assert found[r["source_doc"]] == r["id"]
    assert set(out[ITEM].drop_null().to_pylist()) == set(EMBEDDED) | {"gutenberg-passages/short10"}
    assert set(out[SET].drop_null().to_pylist()) == {"decontam/gutenberg_passages.jsonl"}
    bad = pc.equal(out[schema.STATUS], CONTAMINATED)
    assert pc.all(pc.equal(pc.is_valid(out[ITEM]), bad)).as_py()
    # the embedded passages are 40 words in documents of 300-800: the leakage step's whole-document MinHash
    # does not even make them candidates
    near = NearDedupConfig()
    evals = pa.table({"id": [r["id"] for r in items], "text": [r["text"] for r in items],
                      "split": ["eval"] * len(items)})
    rows = pa.concat_tables([pa.table({"id": sample["id"], "text": sample["text"],
                                       "split": pa.array(["train"] * len(sample))}), evals])
    pairs = _shuffle(explode_bands(PARTS, carry=("id", "split"))(leak_docs(near)(rows)),
                     cross_split_pairs(near.threshold))
    ends = set(pairs["id"].to_pylist()) | set(pairs["other_id"].to_pylist())
    assert not ends & {r["source_doc"] for r in items if r["id"] in EMBEDDED}


def test_twelve_shared_words_are_not_a_13_gram_and_thirteen_are():
    sample = _sample()
    absent = next(r["text"] for r in _eval_items() if r["id"].endswith("absent0")).split()
    host = sample["text"][0].as_py()
    rows = pa.table({"id": ["12", "13", "13-recased"],
                     "text": [f"{host} {' '.join(absent[:12])}", f"{host} {' '.join(absent[:13])}",
                              f"{host} {' '.join(absent[:13]).upper()}!!"]})
    out = _stage()(rows)
    assert out[schema.STATUS].to_pylist() == [schema.KEPT, CONTAMINATED, CONTAMINATED]
    assert out[NGRAMS].to_pylist() == [0, 1, 1]
    assert out[ITEM].to_pylist() == [None, "gutenberg-passages/absent0", "gutenberg-passages/absent0"]


def test_short_items_whole_from_min_words_and_shorter_ones_skipped():
    stage = _stage()
    assert stage.index.skipped == 1  # short5: 5 words, under min_words = 8
    assert stage.index.lengths.tolist() == [13, 10]  # short10 is looked for whole
    five = next(r for r in _eval_items() if r["id"].endswith("short5"))
    rows = pa.table({"id": ["a"], "text": [f"An unrelated preamble here. {five['text']} And more after it."]})
    assert stage(rows)[schema.STATUS].to_pylist() == [schema.KEPT]
    lowered = _stage(min_words=5)
    assert lowered.index.skipped == 0
    assert lowered(rows)[ITEM].to_pylist() == ["gutenberg-passages/short5"]


def test_flag_keeps_rows_and_names_the_item_drop_drops_them_and_quarantined_rows_pass_unexamined():
    sample = _sample().slice(0, 400)
    items = _eval_items()
    text = sample["text"].to_pylist()
    text[7] = f"{text[7]} {items[0]['text']}"  # one item embedded in a real document
    text[399] = items[1]["text"]  # the raw snippet of a row the reader quarantined
    rows = pa.table({"id": sample["id"], "text": text, schema.ERROR: pa.array([None] * 399 + ["bad line"])})
    flagged = _stage(action="flag")(rows)
    dropped = _stage(action="drop")(rows)
    assert flagged[schema.STATUS].to_pylist() == [schema.KEPT] * 399 + [schema.QUARANTINED]
    assert flagged[ITEM].to_pylist() == dropped[ITEM].to_pylist()
    assert flagged[ITEM][7].as_py() == items[0]["id"] and flagged[ITEM][399].as_py() is None
    assert flagged[NGRAMS][399].as_py() is None  # not examined
    assert Counter(dropped[schema.STATUS].to_pylist()) == {
        schema.KEPT: 399 - len(flagged[ITEM].drop_null()), CONTAMINATED: len(flagged[ITEM].drop_null()),
        schema.QUARANTINED: 1}


def test_parquet_eval_set_gives_the_jsonl_index(tmp_path):
    pq.write_table(pa.Table.from_pylist(_eval_items()), tmp_path / "evals.parquet")
    dc = DecontamConfig(eval_paths=(str(tmp_path / "*.parquet"),))
    parquet = load_index(dc, InputConfig())
    jsonl = _stage().index
    assert np.array_equal(parquet.hashes, jsonl.hashes) and np.array_equal(parquet.items, jsonl.items)
    assert parquet.sets.to_pylist() == [f"{tmp_path.name}/evals.parquet"]  # named as the readers name ids


@pytest.mark.parametrize("content, expect", [
    ('{"id": "q1", "question": "What is the capital of France and why does it matter?"}\n',
     r"no 'text' field.*decontam.text_column \(now 'text'\)"),
    ('{"id": "q1", "text": "a fine item of enough words to be indexed here"}\n{"id": "q2", "text": \n',
     r"1 unreadable item\(s\) in one file, the first: .*evals.jsonl @ 2: malformed JSON"),
    ("", r"file is empty"),
])
def test_bad_eval_files_are_errors_naming_the_file_and_the_fix(tmp_path, content, expect):
    bad = tmp_path / "evals.jsonl"
    bad.write_text(content)
    with pytest.raises(UserError, match=expect) as e:
        load_index(DecontamConfig(eval_paths=(str(bad),)), InputConfig())
    assert str(bad) in str(e.value)


def test_missing_or_empty_eval_paths_are_errors():
    with pytest.raises(UserError, match=r"decontam.eval_paths: input path '.*nope' does not exist"):
        load_index(DecontamConfig(eval_paths=("nope",)), InputConfig())
    with pytest.raises(UserError, match=r"decontam.eval_paths is empty.*--set"):
        load_index(DecontamConfig(), InputConfig())
    with pytest.raises(UserError, match=r"decontam.min_words must be at least 1"):
        DecontamConfig(min_words=0)


def test_a_question_column_is_read_with_decontam_text_column(tmp_path):
    f = tmp_path / "qa.jsonl"
    words = _eval_items()[0]["text"]
    f.write_text(json.dumps({"qid": "Q7", "question": words}) + "\n")
    dc = DecontamConfig(eval_paths=(str(f),), text_column="question", id_column="qid")
    stage = DecontamStage(dc, load_index(dc, InputConfig()))
    assert stage(pa.table({"id": ["x"], "text": [f"Before. {words} After."]}))[ITEM].to_pylist() == ["Q7"]


def test_flagged_rows_are_counted_only_from_a_folder_holding_all_rows(tmp_path):
    """In a plan with action = "flag", decontam writes nothing and tokenize (fused into pack) only its quarantined
    rows: counting those would undercount, so no figure is given (the report check then says how to get one)."""
    run = RunDir(tmp_path)
    flagged = _stage(action="flag")(_sample())
    part = tmp_path / "tokenize" / f"{schema.STATUS}={schema.QUARANTINED}"
    part.mkdir(parents=True)
    pq.write_table(flagged.filter(pc.is_valid(flagged[ITEM])).slice(0, 1), part / "part-0.parquet")
    run.mark_done("decontam", "fp", DROPS, 3)
    run.mark_done("tokenize", "fp", DROPS, 3)
    assert rows_by_set(run) is None
    pq.write_table(flagged, tmp_path / "tokenize" / "part-1.parquet")
    run.mark_done("tokenize", "fp", ROWS, 3)
    assert rows_by_set(run) == {"decontam/gutenberg_passages.jsonl": len(flagged[ITEM].drop_null()) + 1}


# --------------------------------------------------------------------------------------- plan and CLI


def test_it_fuses_into_the_tokenize_pass_adding_no_pass(tmp_path):
    for extra in ((), ("labels.enabled=true",)):
        off = describe(sample_config(tmp_path, *extra)).splitlines()
        on = describe(sample_config(tmp_path, f"decontam.eval_paths=[\"{EVAL_DIR}\"]", *extra)).splitlines()
        assert len(on) == len(off)
        assert on[-1] == off[-1].replace(": tokenize", ": decontam -> tokenize")


def test_cli_decontam_alone_drops_names_and_counts(ray_local, tmp_path, capsys):
    """The one end-to-end run: `ray-jobs decontam` on the sample's files through Ray."""
    out = tmp_path / "run"
    args = ["decontam", "--input", str(PARQUET), "--output", str(out), "--set", "ray.progress_bars=false"]
    assert cli_main(args) == 2
    assert "decontam.eval_paths is empty" in capsys.readouterr().err
    assert cli_main([*args, "--set", f"decontam.eval_paths=[\"{EVAL_DIR}\"]"]) == 0
    sample = _sample()
    want = {i for i, (_, item) in zip(sample["id"].to_pylist(),
                                      _reference([(r["id"], r["text"]) for r in _eval_items()],
                                                 sample["text"].to_pylist())) if item}
    bad = pq.read_table(out / "decontam" / f"status={CONTAMINATED}")
    kept = pq.read_table(out / "decontam" / f"status={schema.KEPT}", columns=["id", ITEM])
    assert set(bad["id"].to_pylist()) == want
    assert len(kept) + len(bad) == len(sample) and kept[ITEM].null_count == len(kept)
    stats = run_stats(RunDir(out))
    assert stats["invariant_ok"]
    step = stats["stages"]["decontam"]
    assert step["rows_in"] == len(sample) and step["dropped"] == {CONTAMINATED: len(want)}
    assert step["contaminated_by_set"] == {"decontam/gutenberg_passages.jsonl": len(want)}
    check = next(c for c in run_checks(out) if c.name.startswith("decontaminated"))
    assert check.status == PASS and f"{len(want)} of {len(sample):,} rows" in check.detail
    flag = tmp_path / "flag"
    assert cli_main([*args[:4], str(flag), *args[5:], "--set", f"decontam.eval_paths=[\"{EVAL_DIR}\"]",
                     "--set", "decontam.action=flag"]) == 0
    check = next(c for c in run_checks(flag) if c.name.startswith("decontaminated"))
    assert check.status == WARN and "only flagged" in check.detail
    assert run_stats(RunDir(flag))["stages"]["decontam"]["contaminated_by_set"] == step["contaminated_by_set"]


def test_the_fixture_is_what_its_source_says():
    sample = dict(zip(*[_sample()[c].to_pylist() for c in ("id", "text")]))
    inside = [r for r in _eval_items() if r["kind"].startswith("in the sample")]
    assert len(inside) == 6
    for r in inside:
        assert " ".join(r["text"].split()) in " ".join(sample[r["source_doc"]].split())


def test_a_real_benchmark_ag_news_test_split(shared_data, tmp_path):
    """AG News' 7,600 test items (title + description, as a classifier is evaluated on them) as the eval set: the
    sample agrees with the plain reference everywhere, and an item pasted into a sample document is found."""
    import csv

    with open(shared_data / "ag_news" / "test.csv", newline="", encoding="utf-8") as f:
        items = [(f"ag_news/test/{i}", f"{title} {desc}") for i, (_, title, desc) in enumerate(csv.reader(f))]
    evals = tmp_path / "ag_news_test.jsonl"
    evals.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in items))
    dc = DecontamConfig(eval_paths=(str(evals),))
    stage = DecontamStage(dc, load_index(dc, InputConfig()))
    sample = _sample()
    text = sample["text"].to_pylist()
    text[11] = f"{text[11][:2000]}\n\n{items[4321][1]}\n\n{text[11][2000:]}"
    out = stage(pa.table({"id": sample["id"], "text": text}))
    want = _reference(items, text)
    assert out[NGRAMS].to_pylist() == [h for h, _ in want] and out[ITEM].to_pylist() == [i for _, i in want]
    assert out[ITEM][11].as_py() == "ag_news/test/4321"
