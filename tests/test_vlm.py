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
