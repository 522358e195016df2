"""The tokenize step's settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ray_jobs.errors import check_choice

# SmolLM2's tokenizer (Apache-2.0) ships in the package, so runs and tests work offline.
DEFAULT_TOKENIZER = str(Path(__file__).resolve().parents[2] / "assets" / "smollm2_tokenizer")


@dataclass(frozen=True)
class TokenizeConfig:
    # A tokenizer.json file, a folder (tokenizer.json, or vocab.json + merges.txt), or a hub id.
    tokenizer: str = DEFAULT_TOKENIZER
    # Cut longer documents here (0 = never): with packing on (pack.overflow = "split"), long documents are cut
    # into seq_len pieces there instead, so no token is lost.
    max_length: int = 0
    # "max_length": every row padded to max_length (the seed's `padding="max_length", truncation=True`), with an
    # `attention_mask` column (1 = token, 0 = padding) and labels -100 on the padding; the pad id is the EOS id
    # (never trained on). For trainers that want fixed shapes without packing: needs max_length and
    # pack.enabled = false. "none": rows keep their length (packing or dynamic padding at train time waste less).
    padding: str = "none"
    add_eos: bool = True  # causal LM: the model must learn where a document ends
    eos_token: str = "auto"  # "auto" = <|endoftext|>, </s> or <eos>, whichever the tokenizer has
    # The default byte-level BPE (vocab.json + merges.txt) through tiktoken's encoder, built from the same vocab and
    # merges (steps/tokenize/fast_bpe.py): ids identical to HF tokenizers on all 24,002 documents of the 100 MB
    # benchmark corpus and the sample (tested), 2.6-3.8x HF's speed on one core (benchmarks/tokenize_floor.py).
    # Used only when it reproduces the tokenizer (it checks itself); other tokenizers always go through HF.
    fast_bpe: bool = True
    keep_text: bool = False  # token shards are read by trainers; the text is still in the split stage
    # auto: rows with a `messages` column (chat data, see input.messages_column) go through the chat template,
    # image rows (an `image` column: `ray-jobs ingest` output) go through it as vision-language prompts, others
    # are plain text; "text" / "chat" / "vlm" force one. vlm: the user turn is image_token, a newline, then the
    # row's `instruction` (image_prompt when it has none); the assistant turn is its `response` (else its text,
    # e.g. the caption), the only tokens with labels. The image bytes stay in the row (pack.enabled = false keeps
    # them; packing keeps token columns only).
    format: str = "auto"
    # The placeholder the VLM's processor expands into image patches: use the token its tokenizer has for it
    # (SmolVLM/Idefics3 "<image>", LLaVA "<image>", Qwen2-VL "<|image_pad|>").
    image_token: str = "<image>"
    image_prompt: str = "Describe the image."
    # "auto" = the tokenizer's own (chat_template in its tokenizer_config.json), or a .jinja file, or the text.
    chat_template: str = "auto"
    actors: int = 2
    actor_cpus: float = 0.5  # see clean.actor_cpus

    def __post_init__(self) -> None:
        if self.max_length == 1 or self.max_length < 0:
            raise ValueError(f"tokenize.max_length must be 0 (no limit) or >= 2; got {self.max_length}")
        check_choice("tokenize.format", self.format, ("auto", "text", "chat", "vlm"))
        check_choice("tokenize.padding", self.padding, ("none", "max_length"))
        if self.padding == "max_length" and not self.max_length:
            raise ValueError("tokenize.padding = 'max_length' needs tokenize.max_length (found 0 = no limit); set "
                             "it to the row length, e.g. tokenize.max_length=2048")
