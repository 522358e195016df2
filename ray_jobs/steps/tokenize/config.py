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
    add_eos: bool = True  # causal LM: the model must learn where a document ends
    eos_token: str = "auto"  # "auto" = <|endoftext|>, </s> or <eos>, whichever the tokenizer has
    # The default byte-level BPE (vocab.json + merges.txt) through tiktoken's encoder, built from the same vocab and
    # merges (steps/tokenize/fast_bpe.py): ids identical to HF tokenizers on all 24,002 documents of the 100 MB
    # benchmark corpus and the sample (tested), 2.6-3.8x HF's speed on one core (benchmarks/tokenize_floor.py).
    # Used only when it reproduces the tokenizer (it checks itself); other tokenizers always go through HF.
    fast_bpe: bool = True
    keep_text: bool = False  # token shards are read by trainers; the text is still in the split stage
    # auto: rows with a `messages` column (chat data, see input.messages_column) go through the chat template,
    # others are plain text; "text" / "chat" force one.
    format: str = "auto"
    # "auto" = the tokenizer's own (chat_template in its tokenizer_config.json), or a .jinja file, or the text.
    chat_template: str = "auto"
    actors: int = 2
    actor_cpus: float = 0.5  # see clean.actor_cpus

    def __post_init__(self) -> None:
        if self.max_length == 1 or self.max_length < 0:
            raise ValueError(f"tokenize.max_length must be 0 (no limit) or >= 2; got {self.max_length}")
        check_choice("tokenize.format", self.format, ("auto", "text", "chat"))
