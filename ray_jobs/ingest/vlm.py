"""Vision-language prompts from a chat template: an image placeholder and a question in the user turn.

Two content shapes, as templates expect them:
* "string": the placeholder text (`<image>` by default, the model's image token) before the question, for
  templates that concatenate `message['content']` (ChatML as SmolLM2 ships it, Llama, Mistral);
* "parts": `[{"type": "image"}, {"type": "text", "text": question}]`, for the templates of HF vision processors
  (Idefics3, SmolVLM, LLaVA-OneVision), which write their own image token for the image part.
With a response, the row trains like any chat row: labels only on the assistant's answer (tokenize/chat.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from ray_jobs import schema
from ray_jobs.ingest.images import IMAGE
from ray_jobs.steps.tokenize.chat import ChatEncoder

INSTRUCTION, RESPONSE = "instruction", "response"  # the manifest's fields (ingest/manifest.py)


def vlm_messages(question: str, response: str | None = None, content: str = "string",
                 image_token: str = "<image>", system: str = "") -> list[dict]:
    if content not in ("string", "parts"):
        raise ValueError(f"VLM message content must be 'string' or 'parts'; got {content!r}")
    user = ([{"type": "image"}, {"type": "text", "text": question}] if content == "parts"
            else f"{image_token}\n{question}")
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return msgs + ([{"role": "assistant", "content": response}] if response is not None else [])


def vlm_prompt(encoder: ChatEncoder, question: str, **kw) -> str:
    """The text a model is given to answer a question about an image (ends with the generation prompt)."""
    return encoder.render(vlm_messages(question, **kw), add_generation_prompt=True)


def vlm_example(encoder: ChatEncoder, question: str, response: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, labels) of a question/answer pair about an image: trained on the answer only."""
    return encoder.encode(vlm_messages(question, response, **kw))


def is_image_rows(table: pa.Table) -> bool:
    return IMAGE in table.column_names


def image_conversations(table: pa.Table, image_prompt: str, image_token: str) -> Iterator[list[dict]]:
    """Image rows (`ray-jobs ingest` output, through clean/dedup/split) as conversations: the row's instruction
    (else `image_prompt`) after the placeholder, answered by its response (else its text: the caption)."""
    def col(name: str) -> list:
        return table[name].to_pylist() if name in table.column_names else [None] * len(table)

    for question, response, text in zip(col(INSTRUCTION), col(RESPONSE), col(schema.TEXT)):
        yield vlm_messages(question or image_prompt, response if response is not None else text or "",
                           image_token=image_token)
