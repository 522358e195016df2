import pyarrow as pa
import pytest

from ray_jobs.config import TokenizeConfig
from ray_jobs.steps.tokenize.ops import INPUT_IDS, LABELS, NUM_TOKENS, TRUNCATED, TokenizeStage
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer, resolve_eos

TEXTS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "Call me Ishmael. Some years ago - never mind how long precisely - 1851 dollars.",
    "",
]


def _table():
    return pa.table({"id": ["a", "b", "c"], "text": TEXTS, "split": ["train", "val", "test"]})


def test_shipped_tokenizer_round_trips_and_closes_documents_with_eos():
    stage = TokenizeStage(TokenizeConfig())
    out = stage(_table())
    tok = load_tokenizer(TokenizeConfig().tokenizer)
    eos = tok.token_to_id("<|endoftext|>")
    assert eos == 0  # SmolLM2's document separator
    for text, ids, labels, n, trunc in zip(TEXTS, out[INPUT_IDS].to_pylist(), out[LABELS].to_pylist(),
                                           out[NUM_TOKENS].to_pylist(), out[TRUNCATED].to_pylist()):
        assert ids[-1] == eos and labels == ids and n == len(ids) and not trunc
        assert tok.decode(ids[:-1]) == text
    assert out[INPUT_IDS].type == pa.list_(pa.int32())
    assert "text" not in out.column_names and out["split"].to_pylist() == ["train", "val", "test"]


def test_digits_are_split_one_by_one_like_smollm2():
    tok = load_tokenizer(TokenizeConfig().tokenizer)
    pieces = [tok.decode([i]) for i in tok.encode("1851", add_special_tokens=False).ids]
    assert pieces == ["1", "8", "5", "1"]


def test_truncation_keeps_max_length_including_eos():
    out = TokenizeStage(TokenizeConfig(max_length=8, keep_text=True))(_table())
    assert out[NUM_TOKENS].to_pylist()[:2] == [8, 8]
    assert out[TRUNCATED].to_pylist() == [True, True, False]
    assert out[NUM_TOKENS].to_pylist()[2] == 1 and "text" in out.column_names


def test_without_eos_and_unknown_eos_token():
    out = TokenizeStage(TokenizeConfig(add_eos=False))(_table())
    assert out[NUM_TOKENS].to_pylist()[2] == 0
    with pytest.raises(ValueError, match="set tokenize.eos_token"):
        resolve_eos(load_tokenizer(TokenizeConfig().tokenizer), "<nope>")


def test_tokenizer_json_file_from_shared_data(shared_data):
    path = shared_data / "tokenizers" / "dolma_test_tokenizers" / "gpt-neo-test-tokenizer.json"
    out = TokenizeStage(TokenizeConfig(tokenizer=str(path)))(_table())
    tok = load_tokenizer(str(path))
    assert out[INPUT_IDS].to_pylist()[0][-1] == tok.token_to_id("<|endoftext|>")
    assert tok.decode(out[INPUT_IDS].to_pylist()[0][:-1]) == TEXTS[0]


def test_missing_local_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="neither tokenizer.json nor vocab.json"):
        load_tokenizer(str(tmp_path))
