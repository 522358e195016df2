"""Load a tokenizer from a tokenizer.json file, a folder, or a hub id, with the `tokenizers` library."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

from ray_jobs.errors import UserError

# Document separators tried in order when `eos_token = "auto"`: GPT-2/SmolLM/NeoX style, then Llama style.
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>")


def load_tokenizer(spec: str) -> Tokenizer:
    """`spec` is a tokenizer.json, a folder holding one (or vocab.json + merges.txt), or a hub id (needs network)."""
    p = Path(spec)
    if p.is_file():
        return Tokenizer.from_file(str(p))
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return Tokenizer.from_file(str(p / "tokenizer.json"))
        if (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
            return byte_level_bpe(p)
        raise UserError(f"tokenizer folder {p} holds neither tokenizer.json nor vocab.json + merges.txt")
    try:
        return Tokenizer.from_pretrained(spec)
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise UserError(f"tokenizer {spec!r} is not a local file or folder and could not be fetched from the hub "
                        f"({e}); give a local tokenizer.json path (tokenize.tokenizer=...)") from e


def byte_level_bpe(folder: Path) -> Tokenizer:
    """GPT-2 style byte-level BPE from vocab.json + merges.txt; special tokens from tokenizer_config.json."""
    tok = Tokenizer(BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    # SmolLM2 (llama.cpp pre-tokenizer "smollm") splits digits one by one before the GPT-2 regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    cfg_path = folder / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text())
        vocab = tok.get_vocab()
        special_ids = set(cfg.get("special_token_ids", []))
        special = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in special_ids]
        tok.add_special_tokens(special)
    return tok


def resolve_eos(tok: Tokenizer, eos_token: str) -> int:
    """The id of the document separator: the named token, or with "auto" the first known of EOS_CANDIDATES."""
    names = EOS_CANDIDATES if eos_token == "auto" else (eos_token,)
    for name in names:
        i = tok.token_to_id(name)
        if i is not None:
            return i
    raise UserError(f"tokenizer has none of the end-of-document tokens {list(names)}; set tokenize.eos_token to "
                    f"one of its special tokens, or tokenize.add_eos=false")
