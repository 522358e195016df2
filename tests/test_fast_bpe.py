"""fast_bpe gives the ids of HF tokenizers, document for document, on the sample shards (no Ray)."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from ray_jobs.steps.tokenize.config import DEFAULT_TOKENIZER
from ray_jobs.steps.tokenize.fast_bpe import load_fast_encoder
from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

SAMPLE = Path(__file__).resolve().parents[1] / "shards" / "sample" / "parquet"


def _texts() -> list[str]:
    return [t or "" for f in sorted(SAMPLE.glob("*.parquet")) for t in pq.read_table(f, columns=["text"])
            .column("text").to_pylist()]


def test_ids_equal_hf_on_sample_shards():
    fast = load_fast_encoder(DEFAULT_TOKENIZER)
    assert fast is not None
    hf = load_tokenizer(DEFAULT_TOKENIZER)
    texts = _texts() + ["a\x04.b 12  3 <|im_end|>x's", "\U00040000 \U0010ffff", ""]
    got = fast.encode_batch(texts)
    want = hf.encode_batch_fast(texts, add_special_tokens=False)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g.dtype != np.int32 or g.tolist() != w.ids]
    assert len(got) == len(texts) and not bad, f"{len(bad)} documents differ, first {bad[:1]}"


def test_none_for_tokenizers_it_cannot_reproduce(tmp_path):
    assert load_fast_encoder(tmp_path) is None  # no vocab.json + merges.txt
    load_tokenizer(DEFAULT_TOKENIZER).save(str(tmp_path / "tokenizer.json"))
    assert load_fast_encoder(tmp_path / "tokenizer.json") is None
