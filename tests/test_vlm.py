"""VLM prompts with an image placeholder through SmolLM2's real chat template and an HF-processor-style one."""

from __future__ import annotations

import numpy as np

from ray_jobs.config import TokenizeConfig
from ray_jobs.ingest.vlm import vlm_example, vlm_prompt
from ray_jobs.steps.tokenize.chat import IGNORE, ChatEncoder, template_from
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

TOK = TokenizeConfig().tokenizer
# the shape of Idefics3/SmolVLM templates: content parts, the template writes the image token itself
PARTS_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}"
                  "{{ m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<image>"
                  "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_prompt_has_the_image_then_the_question_and_ends_with_the_generation_prompt():
    enc = ChatEncoder(load_tokenizer(TOK), template_from("auto", TOK))
    prompt = vlm_prompt(enc, "What is on the table?")
    assert "<|im_start|>user\n<image>\nWhat is on the table?<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_answers_are_trained_and_the_image_placeholder_is_not():
    for template, content in ((template_from("auto", TOK), "string"), (PARTS_TEMPLATE, "parts")):
        enc = ChatEncoder(load_tokenizer(TOK), template)
        ids, labels = vlm_example(enc, "How many cats?", "Two cats.", content=content)
        trained = enc.tok.decode(ids[labels != IGNORE].tolist(), skip_special_tokens=False)
        assert trained == "Two cats.<|im_end|>", content
        assert "<image>" in enc.tok.decode(ids.tolist(), skip_special_tokens=False)
        assert np.all(labels[: int(np.argmax(labels != IGNORE))] == IGNORE)


def test_image_rows_tokenize_as_vlm_prompts_with_answer_only_labels():
    """What `ray-jobs run` on an ingest output does in its tokenize step (format auto): an image row with an
    instruction asks it, a caption row asks tokenize.image_prompt; only the answer has labels; the bytes stay."""
    import pyarrow as pa
    import pytest

    from ray_jobs.steps.tokenize.ops import INPUT_IDS, LABELS, TokenizeStage

    rows = pa.table({"id": ["q", "c"], "image": [b"\x89PNG q", b"\x89PNG c"],
                     "instruction": ["How many cats?", None], "response": ["Two cats.", None],
                     "text": ["How many cats?\n\nTwo cats.", "a cat on a mat"]})
    out = TokenizeStage(TokenizeConfig(image_prompt="Caption this."))(rows)
    tok = load_tokenizer(TOK)
    ids, labels = out[INPUT_IDS].to_pylist(), out[LABELS].to_pylist()
    prompts = [tok.decode(i, skip_special_tokens=False) for i in ids]
    trained = [tok.decode([t for t in lab if t != IGNORE], skip_special_tokens=False) for lab in labels]
    assert "<|im_start|>user\n<image>\nHow many cats?<|im_end|>" in prompts[0]
    assert "<|im_start|>user\n<image>\nCaption this.<|im_end|>" in prompts[1]
    assert trained == ["Two cats.<|im_end|>", "a cat on a mat<|im_end|>"]
    assert out["image"].to_pylist() == rows["image"].to_pylist() and "text" not in out.column_names
    with pytest.raises(ValueError, match="no image column"):
        TokenizeStage(TokenizeConfig(format="vlm"))(rows.drop_columns(["image"]))
