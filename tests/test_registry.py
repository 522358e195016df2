"""Adding a step is one module plus one registry entry: tests/extra_step.py registered here runs through the
planner (fused into clean's pass), the CLI's single-step verb, stats.json and the report, with no other file
touched. Also: the plan's shape from the declarations alone (no Ray)."""

from __future__ import annotations

import json

import extra_step
import pyarrow.dataset as pads
import pytest
from conftest import PARQUET

from ray_jobs.cli import main as cli_main
from ray_jobs.config import load_config
from ray_jobs.planner import describe
from ray_jobs.steps import registry


@pytest.fixture
def keyword_step():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(extra_step)  # Ray's workers do not have tests/ on their path
    registry.register(extra_step.STEP)
    yield extra_step.STEP
    registry.unregister("keyword")


def test_the_default_plan_reads_the_text_twice():
    assert describe(load_config(None)).splitlines() == [
        "pass 1: text pass (fused row steps): clean + minhash digest",
        "pass 2: compact rows (global steps): dedup -> split -> leakage",
        "pass 3: text pass (fused row steps): tokenize -> pack",
    ]
    labels = describe(load_config(None, ["labels.enabled=true", "pack.enabled=false"])).splitlines()
    assert labels[2:] == ["pass 3: full rows (global step on the text): labels",
                          "pass 4: text pass (fused row steps): tokenize"]
    assert describe(load_config(None), ("dedup",)) == "pass 1: full rows (global step on the text): dedup"


def test_a_registered_step_has_a_section_a_verb_and_a_place_in_the_plan(keyword_step):
    cfg = load_config(None, ['keyword.words=["ipsum"]'])
    assert cfg.extra["keyword"].words == ("ipsum",)
    assert "keyword" in load_config(None).extra  # its defaults, like any section
    assert describe(cfg).splitlines()[0] == "pass 1: text pass (fused row steps): clean -> keyword + minhash digest"
    with pytest.raises(ValueError, match="valid keys: .*keyword"):
        load_config(None, ["keywrd.words=[]"])


def test_a_renamed_key_names_its_new_name(monkeypatch):
    from ray_jobs import config

    monkeypatch.setitem(config.RENAMED, "clean.actors", "clean.pool_size")
    with pytest.raises(ValueError, match="clean.actors was renamed to clean.pool_size"):
        load_config(None, ["clean.actors=1"])
    assert load_config(None, ["tokenize.actors=1"]).tokenize.actors == 1  # the others keep working


@pytest.mark.slow
def test_a_registered_step_runs_through_the_cli_stats_and_report(keyword_step, ray_local, tmp_path, capsys):
    out = tmp_path / "run"
    # "subscribe" is in mailing-list footers of the sample's e-mails
    sets = ["--set", 'keyword.words=["subscribe"]', "--set", "ray.progress_bars=false", "--set", "pack.enabled=false",
            "--set", f'input.paths=["{PARQUET}"]']
    assert cli_main(["run", "--output", str(out), *sets]) == 0
    stats = json.loads((out / "stats.json").read_text())["stages"]
    kw = stats["keyword"]
    assert kw["dropped"]["keyword"] > 0 and kw["keyword_rows"] == kw["dropped"]["keyword"] and kw["invariant_ok"]
    assert stats["clean"]["rows_out"] == kw["rows_in"] and stats["dedup"]["rows_in"] == kw["rows_out"]
    dropped = pads.dataset(str(out / "keyword" / "status=keyword"), format="parquet").to_table()
    assert all("subscribe" in t.lower() for t in dropped["text"].to_pylist())
    kept = pads.dataset(str(out / "keyword" / "status=kept"), format="parquet").to_table(["keyword_hits"])
    assert set(kept["keyword_hits"].to_pylist()) == {0}
    assert "keyword filter applied" in (out / "report.html").read_text()
    capsys.readouterr()
    assert cli_main(["stats", str(out)]) == 0 and "keyword" in capsys.readouterr().out
    # and alone, as its own verb on any readable input: the raw sample
    single = tmp_path / "single"
    assert cli_main(["keyword", "--input", str(PARQUET), "--output", str(single), *sets]) == 0
    raw = pads.dataset(str(PARQUET), format="parquet").to_table(["text"])["text"].to_pylist()
    want = sum("subscribe" in (t or "").lower() for t in raw)
    assert json.loads((single / "stats.json").read_text())["stages"]["keyword"]["dropped"] == {"keyword": want}
