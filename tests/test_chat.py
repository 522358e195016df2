"""Chat templates and assistant-only labels, with SmolLM2's real ChatML template and tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from ray_jobs import schema
from ray_jobs.config import InputConfig, TokenizeConfig
from ray_jobs.io.formats import FileUnit, parse_file
from ray_jobs.steps.tokenize.chat import IGNORE, ChatEncoder, template_from
from ray_jobs.steps.tokenize.ops import LABELS, LOSS_TOKENS, TokenizeStage
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

ASSET = TokenizeConfig().tokenizer  # the embedded copy of the shared SmolLM2 export
CONVERSATION = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy? Add 2+2 as well."},
    {"role": "assistant", "content": "Rome; and 2+2 = 4."},
]
# The same template with {% generation %} markers around what the assistant must learn (trl's convention).
ASSISTANT_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
MARKED_TURN = ("{{'<|im_start|>' + message['role'] + '\n'}}{% if message['role'] == 'assistant' %}{% generation %}"
               "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}"
               "{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}")


@pytest.fixture(scope="module", params=["asset", "shared"])
def tokenizer_path(request):
    if request.param == "asset":
        return ASSET
    from tests.conftest import SHARED_DATA
    path = SHARED_DATA / "tokenizers" / "smollm2_135m_instruct_gguf_export"
    if not path.is_dir():
        pytest.skip(f"{path} not found: ../shared/data is absent")
    return str(path)


@pytest.fixture(scope="module")
def encoder(tokenizer_path):
    return ChatEncoder(load_tokenizer(tokenizer_path), template_from("auto", tokenizer_path))


def _trained_text(enc: ChatEncoder, ids: np.ndarray, labels: np.ndarray) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, cur = [], []
    for i, lab in zip(ids.tolist(), labels.tolist()):
        if lab != IGNORE:
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [enc.tok.decode(r, skip_special_tokens=False) for r in runs]


def test_template_is_chatml_without_markers(encoder):
    assert "<|im_start|>" in encoder.hf.chat_template and encoder.method == "prefix"


def test_only_assistant_turns_are_trained_multi_turn(encoder):
    ids, labels = encoder.encode(CONVERSATION)
    # the whole rendering is tokenized once, exactly as the template writes it
    assert encoder.tok.decode(ids.tolist(), skip_special_tokens=False) == encoder.render(CONVERSATION)
    assert _trained_text(encoder, ids, labels) == ["Paris is the capital of France.<|im_end|>",
                                                   "Rome; and 2+2 = 4.<|im_end|>"]
    assert np.array_equal(labels[labels != IGNORE], ids[labels != IGNORE])


def test_default_system_prompt_of_the_template_is_not_trained(encoder):
    ids, labels = encoder.encode(CONVERSATION[1:3])
    text = encoder.render(CONVERSATION[1:3])
    assert "You are a helpful AI assistant named SmolLM" in text  # the template adds its own system turn
    assert _trained_text(encoder, ids, labels) == ["Paris is the capital of France.<|im_end|>"]


def test_generation_markers_give_the_same_mask_as_transformers(tokenizer_path, encoder):
    template = template_from("auto", tokenizer_path)
    assert ASSISTANT_TURN in template
    marked = ChatEncoder(load_tokenizer(tokenizer_path), template.replace(ASSISTANT_TURN, MARKED_TURN))
    assert marked.method == "markers"  # transformers' return_assistant_tokens_mask
    ids_m, labels_m = marked.encode(CONVERSATION)
    ids, labels = encoder.encode(CONVERSATION)
    assert np.array_equal(ids_m, ids) and np.array_equal(labels_m, labels)


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer_path):
    # like Qwen3, which drops earlier assistant reasoning: earlier turns render differently once a turn follows
    template = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
                "{{ '<|im_start|>assistant\n[...]<|im_end|>\n' }}{% else %}"
                "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    enc = ChatEncoder(load_tokenizer(tokenizer_path), template)
    with pytest.raises(ValueError, match="generation %} markers"):
        enc.encode(CONVERSATION)


def test_bad_conversations_are_named(encoder):
    with pytest.raises(ValueError, match="no assistant turn"):
        encoder.encode(CONVERSATION[:2])
    with pytest.raises(ValueError, match="role in"):
        encoder.encode([{"role": "narrator", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_instruction_response_jsonl_becomes_chat_rows_and_tokens(tmp_path):
    path = tmp_path / "sft.jsonl"
    rows = [{"id": "a", "instruction": "Name a colour.", "response": "Blue."},
            {"id": "b", "messages": CONVERSATION},
            {"id": "c", "messages": [{"role": "user", "content": "no answer"}]},  # nothing to train on
            {"id": "d", "title": "neither text nor a conversation"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.concat_tables(parse_file(FileUnit(str(path), "sft.jsonl", "jsonl"), InputConfig(paths=(str(path),))))
    by_id = {r["id"]: r for r in table.to_pylist()}
    assert by_id["a"]["text"] == "Name a colour.\n\nBlue."
    assert json.loads(by_id["a"][schema.MESSAGES])[1] == {"role": "assistant", "content": "Blue."}
    bad = [r for r in by_id.values() if r[schema.ERROR]]
    assert [r["id"] for r in bad] == ["sft.jsonl:4"] and "no 'text' field and no conversation" in bad[0][schema.ERROR]

    stage = TokenizeStage(TokenizeConfig(max_length=64))
    ok = table.filter(pa.array([r is None for r in table[schema.ERROR].to_pylist()]))
    out = stage(ok).to_pylist()
    got = {r["id"]: r for r in out}
    enc = stage._chat
    assert _trained_text(enc, np.array(got["a"]["input_ids"]), np.array(got["a"][LABELS])) == ["Blue.<|im_end|>"]
    assert got["b"]["truncated"] and got["b"]["num_tokens"] == 64  # the long conversation is cut at max_length
    assert got["c"]["num_tokens"] == 0 and "no assistant turn" in got["c"][schema.ERROR]
    assert got["a"][LOSS_TOKENS] == len(enc.tok.encode("Blue.<|im_end|>", add_special_tokens=False).ids)
