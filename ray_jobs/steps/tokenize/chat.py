"""Chat and instruction rows -> token ids and labels that train only on the assistant turns.

The text comes from the tokenizer's own chat template, rendered by transformers' `apply_chat_template`. Which
characters are the assistant's is read from the template itself, never guessed from role strings:

* `markers`: the template wraps what the model must learn in `{% generation %}...{% endgeneration %}`;
  transformers returns that mask (`return_assistant_tokens_mask`), as trl's assistant-only loss uses it.
* `prefix`: templates without markers (most: ChatML as shipped by SmolLM2, Llama 3, Mistral) are rendered turn by
  turn. Assistant turn i spans from the end of render(messages[:i], add_generation_prompt=True) to the end of
  render(messages[:i+1]), trailing whitespace excluded: its content and the template's end-of-turn token, which the
  model must learn to emit to stop. This holds only when each rendering is a prefix of the next; a template that
  rewrites earlier turns (Qwen3 drops old reasoning) fails that check with an error naming the fix.

Characters map to tokens by the tokenizer's offsets: a token is trained when its first character is the
assistant's. Labels are the input ids there and -100 elsewhere (HF causal-LM models shift them inside the loss).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ray_jobs.errors import UserError

IGNORE = -100  # the label PyTorch's cross-entropy skips (ignore_index)
ROLES = ("system", "user", "assistant", "tool")


def template_from(spec: str, tokenizer_spec: str) -> str:
    """The chat template: "auto" = the `chat_template` of the tokenizer's tokenizer_config.json (local folder or hub
    id); a path to a .jinja file; or the template text itself."""
    if spec != "auto":
        p = Path(spec)
        return p.read_text() if spec.endswith((".jinja", ".j2")) or p.is_file() else spec
    p = Path(tokenizer_spec)
    folder = p if p.is_dir() else p.parent
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        template = json.loads(cfg_path.read_text()).get("chat_template")
    elif not p.exists():  # a hub id: needs the network, as loading the tokenizer itself does
        from transformers import AutoTokenizer
        template = AutoTokenizer.from_pretrained(tokenizer_spec).chat_template
    else:
        template = None
    if isinstance(template, list):  # some configs hold named templates: [{"name": "default", "template": ...}]
        template = {t["name"]: t["template"] for t in template}.get("default")
    if not template:
        raise UserError(f"tokenizer {tokenizer_spec!r} has no chat_template (looked in {cfg_path}); set "
                        f"tokenize.chat_template to a .jinja file or the template text")
    return template


class ChatEncoder:
    """messages -> (input_ids int32, labels int32 with IGNORE outside the assistant turns)."""

    def __init__(self, tok: Tokenizer, template: str, special_tokens: dict[str, str] | None = None) -> None:
        from transformers import PreTrainedTokenizerFast  # 2 s to import: only where chat rows are tokenized

        self.tok = tok
        self.hf = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **(special_tokens or {}))
        self.method = "markers" if "{% generation %}" in template or "{%- generation %}" in template else "prefix"

    def render(self, messages: list[dict], **kw) -> str:
        return self.hf.apply_chat_template(messages, tokenize=False, **kw)

    def assistant_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
        """The rendered conversation and the character spans of its assistant turns (method `prefix`)."""
        text = self.render(messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render(messages[:i], add_generation_prompt=True) if i else None
            upto = self.render(messages[:i + 1])
            if before is None or not upto.startswith(before) or not text.startswith(upto):
                raise UserError(
                    "the chat template does not render each turn as a prefix of the next (turn "
                    f"{i}, role assistant), so the assistant's characters cannot be located; use a template with "
                    "{% generation %} markers around the assistant content (tokenize.chat_template)"
                    if before is not None else
                    "a conversation starts with an assistant turn; the template needs a system or user turn first")
            end = len(upto.rstrip())
            spans.append((len(before), end))
        return text, spans

    def encode(self, messages: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        _check_messages(messages)
        if self.method == "markers":
            out = self.hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                              return_assistant_tokens_mask=True)
            ids = np.asarray(out["input_ids"], dtype=np.int32)
            mask = np.asarray(out["assistant_masks"], dtype=bool)
        else:
            text, spans = self.assistant_spans(messages)
            enc = self.tok.encode(text, add_special_tokens=False)
            ids = np.asarray(enc.ids, dtype=np.int32)
            starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=len(enc.offsets))
            mask = np.zeros(len(ids), dtype=bool)
            for lo, hi in spans:
                mask |= (starts >= lo) & (starts < hi)
        return ids, np.where(mask, ids, IGNORE).astype(np.int32)


def _check_messages(messages: list[dict]) -> None:
    if not messages:
        raise ValueError("empty conversation: expected a list of {role, content} messages")
    for m in messages:
        content = m.get("content")
        parts = isinstance(content, list) and all(isinstance(p, dict) and "type" in p for p in content)
        if m.get("role") not in ROLES or not (isinstance(content, str) or parts):
            raise ValueError(f"expected messages with role in {ROLES} and a string content (or a list of "
                             f"{{type: ...}} parts, as vision templates take); found {m!r}")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("conversation has no assistant turn: nothing to train on")


def instruction_messages(instruction: str, response: str, system: str = "") -> list[dict]:
    """An instruction/response pair as a conversation (with the system prompt when one is given)."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
