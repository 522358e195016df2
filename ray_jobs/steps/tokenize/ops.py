"""The tokenize stage: batched `encode_batch` in actors, causal-LM labels, truncation, Arrow list columns out.

Text rows: labels = input ids, EOS appended. Chat rows (a `messages` column, from the reader): rendered through
the tokenizer's chat template, labels IGNORE (-100) outside the assistant turns (tokenize/chat.py). A conversation
that cannot be encoded keeps its row with no tokens and its reason in `_error`, so one bad row never stops the job
and is never lost silently."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from jinja2 import TemplateError

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.ingest.vlm import image_conversations, is_image_rows
from ray_jobs.steps.base import Stage
from ray_jobs.steps.tokenize.chat import IGNORE, ChatEncoder, template_from
from ray_jobs.steps.tokenize.config import TokenizeConfig
from ray_jobs.steps.tokenize.fast_bpe import FastBPE, load_fast_encoder
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer, resolve_eos

INPUT_IDS = "input_ids"
LABELS = "labels"
NUM_TOKENS = "num_tokens"
LOSS_TOKENS = "loss_tokens"  # tokens with a label: all of a text row, the assistant's of a chat row
TRUNCATED = "truncated"


def list_column(lengths: np.ndarray, values: np.ndarray) -> pa.ListArray:
    """Flat int32 values + per-row lengths -> list<int32> without Python lists of ints."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


class TokenizeStage(Stage):
    """text or messages -> input_ids, labels, num_tokens, loss_tokens, truncated. Text rows: labels = input_ids
    (HF causal-LM models shift them by one inside the loss) and the EOS token closes every document so the model
    learns where documents end. Chat rows: the template's own end-of-turn tokens do that."""

    stateful = True

    def __init__(self, cfg: TokenizeConfig) -> None:
        self.cfg = cfg
        self._tok = None
        self._eos: int | None = None
        self._chat: ChatEncoder | None = None
        self._fast: FastBPE | None = None
        self._pad = 0

    def setup(self) -> None:
        self._tok = load_tokenizer(self.cfg.tokenizer)
        self._fast = load_fast_encoder(self.cfg.tokenizer) if self.cfg.fast_bpe else None
        self._eos = resolve_eos(self._tok, self.cfg.eos_token) if self.cfg.add_eos else None
        self._pad = resolve_eos(self._tok, self.cfg.eos_token) if self.cfg.padding == "max_length" else 0
        if self.cfg.format in ("chat", "vlm"):
            self._chat_encoder()

    def _chat_encoder(self) -> ChatEncoder:
        if self._chat is None:
            self._chat = ChatEncoder(self._tok, template_from(self.cfg.chat_template, self.cfg.tokenizer))
        return self._chat

    def __call__(self, table: pa.Table) -> pa.Table:
        if self._tok is None:
            self.setup()
        fmt = self.cfg.format
        if fmt == "auto":
            fmt = "chat" if schema.MESSAGES in table.column_names else "vlm" if is_image_rows(table) else "text"
        if fmt == "chat" and schema.MESSAGES not in table.column_names:
            raise UserError(f"tokenize.format = 'chat' but the rows have no {schema.MESSAGES!r} column (found "
                            f"{table.column_names}); give chat data (input.messages_column) or format = 'auto'")
        if fmt == "vlm" and not is_image_rows(table):
            raise UserError(f"tokenize.format = 'vlm' but the rows have no image column (found "
                            f"{table.column_names}); give image rows (`ray-jobs ingest` output) or format = 'auto'")
        if fmt == "text":
            ids, labels, full, errors = self._text_rows(table)
        else:
            ids, labels, full, errors = self._chat_rows(
                table[schema.MESSAGES].to_pylist() if fmt == "chat" else
                image_conversations(table, self.cfg.image_prompt, self.cfg.image_token))
        lengths = np.fromiter((len(a) for a in ids), dtype=np.int32, count=len(ids))
        loss = np.fromiter((int((b != IGNORE).sum()) for b in labels), dtype=np.int32, count=len(labels))
        if self.cfg.padding == "max_length":
            ids_col, labels_col, mask_col = self._padded(ids, labels, lengths)
        else:
            ids_col = list_column(lengths, np.concatenate(ids) if ids else np.zeros(0, np.int32))
            labels_col = ids_col if labels is ids else list_column(
                lengths, np.concatenate(labels) if labels else np.zeros(0, np.int32))
            mask_col = None
        if not self.cfg.keep_text:
            table = table.drop_columns([schema.TEXT])
        if errors is not None:
            old = table[schema.ERROR] if schema.ERROR in table.column_names else pa.nulls(len(table), pa.string())
            merged = pa.array([e if e is not None else o for e, o in zip(errors, old.to_pylist())], pa.string())
            table = (table.set_column(table.schema.get_field_index(schema.ERROR), schema.ERROR, merged)
                     if schema.ERROR in table.column_names else table.append_column(schema.ERROR, merged))
        out = (table.append_column(INPUT_IDS, ids_col)
               .append_column(LABELS, labels_col)
               .append_column(NUM_TOKENS, pa.array(lengths))
               .append_column(LOSS_TOKENS, pa.array(loss))
               .append_column(TRUNCATED, pa.array(full > lengths)))
        return out if mask_col is None else out.append_column(schema.ATTENTION_MASK, mask_col)

    def _padded(self, ids: list[np.ndarray], labels: list[np.ndarray], lengths: np.ndarray):
        """Rows right-padded to max_length: ids with the pad id, labels with IGNORE, and the attention mask."""
        width = self.cfg.max_length
        mask = np.arange(width)[None, :] < lengths[:, None]
        out_ids = np.full(mask.shape, self._pad, np.int32)
        out_labels = np.full(mask.shape, IGNORE, np.int32)
        if len(ids):
            out_ids[mask] = np.concatenate(ids)
            out_labels[mask] = np.concatenate(labels)
        rows = np.full(len(ids), width, np.int32)
        return (list_column(rows, out_ids.ravel()), list_column(rows, out_labels.ravel()),
                pa.ListArray.from_arrays(pa.array(np.arange(len(ids) + 1, dtype=np.int32) * width),
                                         pa.array(mask.ravel().astype(np.int8))))

    def _text_rows(self, table: pa.Table):
        texts = [t or "" for t in table[schema.TEXT].to_pylist()]
        if self._fast is not None:
            encoded = self._fast.encode_batch(texts)
        else:
            encoded = [np.asarray(e.ids, dtype=np.int32)
                       for e in self._tok.encode_batch_fast(texts, add_special_tokens=False)]
        budget = (self.cfg.max_length or 1 << 62) - (self._eos is not None)
        ids = [a[:budget] for a in encoded]
        full = np.fromiter((len(a) + (self._eos is not None) for a in encoded), dtype=np.int64, count=len(encoded))
        if self._eos is not None:
            ids = [np.append(a, np.int32(self._eos)) for a in ids]
        return ids, ids, full, None

    def _chat_rows(self, conversations):
        """Conversations (JSON text or lists of messages) through the chat template, one per row."""
        enc = self._chat_encoder()
        ids, labels, full, errors = [], [], [], []
        empty = np.zeros(0, np.int32)
        for raw in conversations:
            try:
                msgs = json.loads(raw) if isinstance(raw, str) else raw
                if not isinstance(msgs, list):
                    raise ValueError(f"expected a list of messages, found {type(msgs).__name__}")
                i, lab = enc.encode(msgs)
            except (ValueError, TypeError, KeyError, TemplateError) as e:
                i, lab, err = empty, empty, f"chat row not tokenized: {e}"
            else:
                err = None
            full.append(len(i))
            ids.append(i[:self.cfg.max_length or None])
            labels.append(lab[:self.cfg.max_length or None])
            errors.append(err)
        return ids, labels, np.asarray(full, dtype=np.int64), errors if any(errors) else None
