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


def test_padding_max_length_truncates_pads_and_masks():
    from ray_jobs.schema import ATTENTION_MASK
    from ray_jobs.train.data import collate_padded

    cfg = TokenizeConfig(max_length=12, padding="max_length", keep_text=True)
    out = TokenizeStage(cfg)(_table())
    plain = TokenizeStage(TokenizeConfig(max_length=12))(_table())
    tok = load_tokenizer(cfg.tokenizer)
    eos = tok.token_to_id("<|endoftext|>")
    for ids, labels, mask, want in zip(out[INPUT_IDS].to_pylist(), out[LABELS].to_pylist(),
                                       out[ATTENTION_MASK].to_pylist(), plain[INPUT_IDS].to_pylist()):
        n = len(want)
        assert len(ids) == len(labels) == len(mask) == 12
        assert ids[:n] == labels[:n] == want and mask == [1] * n + [0] * (12 - n)
        assert ids[n:] == [eos] * (12 - n) and labels[n:] == [-100] * (12 - n)
    assert out[NUM_TOKENS].to_pylist() == plain[NUM_TOKENS].to_pylist() == [12, 12, 1]
    assert out[TRUNCATED].to_pylist() == [True, True, False]
    # the trainer's collate counts only the real tokens of padded rows: same batch as from the unpadded rows
    a, b = collate_padded(out), collate_padded(plain)
    assert all((a[k] == b[k]).all() for k in ("input_ids", "labels", "attention_mask"))


def test_padding_needs_max_length_and_no_packing(tmp_path):
    from ray_jobs.config import load_config
    from ray_jobs.errors import UserError
    from ray_jobs.steps.pack.spec import STEP

    with pytest.raises(ValueError, match="needs tokenize.max_length"):
        TokenizeConfig(padding="max_length")
    cfg = load_config(None, [f"output.dir={tmp_path}", "tokenize.padding=max_length", "tokenize.max_length=16"])
    with pytest.raises(UserError, match="pack.enabled = false"):
        STEP.ops(cfg)


def test_shipped_tokenizer_json_is_the_vocab_merges_build_and_opens_in_autotokenizer():
    """tokenizer.json sits beside vocab.json + merges.txt for transformers; it must stay the same tokenizer (so
    the fast encoder still applies), and AutoTokenizer must give our ids."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from ray_jobs.steps.tokenize.fast_bpe import load_fast_encoder
    from ray_jobs.steps.tokenize.tokenizer import byte_level_bpe

    folder = Path(TokenizeConfig().tokenizer)
    assert load_tokenizer(str(folder)).to_str() == byte_level_bpe(folder).to_str()
    auto = AutoTokenizer.from_pretrained(str(folder))
    texts = TEXTS + ["naïve café 東京 🙂 x's <|im_end|>\n\n  12 345"]
    ours = TokenizeStage(TokenizeConfig(add_eos=False))(pa.table({"id": list("abcd"), "text": texts}))
    assert [auto(t, add_special_tokens=False)["input_ids"] for t in texts] == ours[INPUT_IDS].to_pylist()
    assert auto.eos_token == "<|im_end|>" and auto.convert_tokens_to_ids("<|endoftext|>") == 0
    assert load_fast_encoder(folder) is not None  # the shipped tokenizer.json does not turn the fast path off
