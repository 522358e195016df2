import dataclasses
from pathlib import Path

from ray_jobs.config import RunConfig, load_config, to_toml

REPO = Path(__file__).resolve().parents[1]


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = load_config(None, ["split.stratify_by=label", "clean.allowed_langs=[\"en\",\"de\"]",
                             "clean.quality.max_top_ngram_char_frac=[[2, 0.25]]", "ray.batch_size=77"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(path) == cfg


def test_shipped_sample_config_lists_every_key_with_the_defaults():
    cfg = load_config(REPO / "cluster" / "configs" / "sample.toml")
    defaults = RunConfig()
    assert cfg.clean == defaults.clean and cfg.dedup == defaults.dedup and cfg.split == defaults.split
    assert cfg.leakage == defaults.leakage and cfg.pack == defaults.pack and cfg.train == defaults.train
    assert cfg.ingest == defaults.ingest and cfg.decontam == defaults.decontam
    assert cfg.url_filter == defaults.url_filter and cfg.quality_model == defaults.quality_model
    assert cfg.tokenize == dataclasses.replace(defaults.tokenize, tokenizer=cfg.tokenize.tokenizer)
    assert cfg.input == dataclasses.replace(defaults.input, paths=cfg.input.paths)
    assert cfg.ray == defaults.ray and cfg.input.paths == ("shards/sample/parquet",)
    assert (REPO / cfg.tokenize.tokenizer).resolve() == Path(defaults.tokenize.tokenizer)
