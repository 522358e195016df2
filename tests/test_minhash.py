"""MinHash signatures and LSH parameters: exact shingles, Jaccard estimates on real pairs, band choice."""

from __future__ import annotations

import csv
import re
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_jobs.steps.dedup.minhash import (
    MinHashConfig,
    band_keys,
    candidate_probability,
    jaccard_estimate,
    optimal_bands_rows,
    shingle_set,
    signatures,
)
from tests.conftest import SAMPLE

CFG = MinHashConfig()


def _char_shingles(text: str, n: int = 5) -> set[str]:
    """The reference: shingles as Python strings, independent of our hashing."""
    s = re.sub(r"\s+", " ", text.lower()).strip()
    return {s[i:i + n] for i in range(max(len(s) - n + 1, 1))} if s else set()


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def _sample_texts() -> list[str]:
    return pq.read_table(SAMPLE / "parquet", columns=["text"])["text"].to_pylist()


def _check_estimates(pairs: list[tuple[str, str]], num_perm: int = 128) -> tuple[float, float]:
    """Mean |estimate - exact| and the mean standard error sqrt(J(1-J)/num_perm) over the pairs."""
    cfg = MinHashConfig(num_perm=num_perm)
    left, _ = signatures(pa.array([a for a, _ in pairs]), cfg)
    right, _ = signatures(pa.array([b for _, b in pairs]), cfg)
    est = jaccard_estimate(left, right)
    exact = np.array([_jaccard(_char_shingles(a), _char_shingles(b)) for a, b in pairs])
    return float(np.abs(est - exact).mean()), float(np.sqrt(exact * (1 - exact) / num_perm).mean())


def test_shingle_sets_match_python_substrings_on_multilingual_text():
    # the sample holds Gutenberg English, spam mail and lingua sentences in 20+ scripts (CJK, Cyrillic, Arabic)
    for text in _sample_texts()[::7]:
        assert len(shingle_set(text, CFG)) == len(_char_shingles(text))


def test_word_shingles_count_word_ngrams():
    cfg = MinHashConfig(shingle="word", ngram=3)
    text = "the cat sat on the mat the cat sat"
    words = text.split()
    assert len(shingle_set(text, cfg)) == len({tuple(words[i:i + 3]) for i in range(len(words) - 2)})


def test_word_shingles_ignore_extra_whitespace():
    # Arrow's whitespace split keeps empty strings at the ends and between two separators; Python's does not
    cfg = MinHashConfig(shingle="word", ngram=2)
    assert shingle_set(" the  cat\tsat ", cfg) == shingle_set("the cat sat", cfg)
    assert signatures(pa.array(["", "  \n ", None, "one"]), cfg)[1].tolist() == [False, False, False, True]


def test_signature_of_a_document_does_not_depend_on_its_batch():
    # 600 documents cross rensa's 255-document chunks (and the 128k-character ones) inside one call
    texts = _sample_texts()[:600]
    batch, has = signatures(pa.array(texts), CFG)
    assert len(texts) == 600
    for i in (0, 1, 57, 254, 255, 256, 299, 599):
        alone, _ = signatures(pa.array([texts[i]]), CFG)
        assert np.array_equal(alone[0], batch[i])
    assert has.tolist() == [bool(t.strip()) for t in texts]


def test_short_and_empty_documents():
    sig, has = signatures(pa.array(["abc", "ABC  ", "", None, "abd"]), CFG)
    assert has.tolist() == [True, True, False, False, True]
    assert np.array_equal(sig[0], sig[1])  # case and whitespace folded; shorter than one shingle: one shingle
    assert jaccard_estimate(sig[0], sig[4]) < 0.2


def test_estimates_agree_with_exact_jaccard_on_sample_pairs():
    texts = [t for t in _sample_texts() if len(t) > 200]
    rng = np.random.default_rng(0)
    pairs = []
    for i in rng.choice(len(texts), 150, replace=False):  # perturbed copies: Jaccard spread over (0, 1)
        words = texts[i].split()
        cut = rng.random(len(words)) < rng.uniform(0.0, 0.3)
        pairs.append((texts[i], " ".join(w if not c else "zz" + w[::-1] for w, c in zip(words, cut))))
    err, se = _check_estimates(pairs)
    assert err < 1.5 * se, (err, se)


def test_estimates_agree_with_exact_jaccard_on_plagiarism_corpus(shared_data):
    # Clough & Stevenson: each student answer against its task's Wikipedia source, from verbatim copies (cut)
    # through light and heavy rewrites to independent answers (non)
    root = shared_data / "plagiarism_short_answers_clough" / "data"
    with open(root / "file_information.csv", newline="") as fh:
        info = list(csv.DictReader(fh))

    def read(name: str) -> str:
        return (root / name).read_text(encoding="utf-8", errors="replace")

    pairs = [(read(f"orig_task{r['Task']}.txt"), read(r["File"])) for r in info if r["Category"] != "orig"]
    assert len(pairs) == 95
    err, se = _check_estimates(pairs)
    assert err < 1.5 * se, (err, se)


@pytest.mark.slow
def test_estimates_agree_with_exact_jaccard_on_imdb_pairs(shared_data):
    # Real pairs from IMDB's test set: reviews re-posted with small edits (equal after lower-casing and
    # dropping punctuation), two reviews of the same movie (urls_*.txt maps review id -> movie), random pairs
    docs, movie = {}, {}
    with tarfile.open(shared_data / "imdb_aclimdb" / "aclImdb_test.tar.gz") as tar:
        for m in tar:
            if not m.isfile():
                continue
            parent, base = m.name.split("/")[-2:]
            label = "pos" if "pos" in (parent, base[5:8]) else "neg"  # aclImdb/test/pos/12_9.txt, urls_pos.txt
            if base == f"urls_{label}.txt":
                for i, url in enumerate(tar.extractfile(m).read().decode().split()):
                    movie[(label, i)] = url
            elif parent == label:
                rid = int(base.split("_")[0])
                docs[(label, rid)] = tar.extractfile(m).read().decode("utf-8", errors="replace")
    groups: dict[str, list[str]] = {}
    by_movie: dict[str, list[str]] = {}
    for key, text in docs.items():
        groups.setdefault(re.sub(r"[^a-z0-9 ]", "", text.lower()), []).append(text)
        by_movie.setdefault(movie[key], []).append(text)
    pairs = [(g[0], g[1]) for g in groups.values() if len(g) > 1]
    pairs += [(g[0], g[1]) for g in list(by_movie.values())[:300] if len(g) > 1]
    texts = list(docs.values())
    rng = np.random.default_rng(1)
    pairs += [(texts[i], texts[j]) for i, j in rng.integers(0, len(texts), (100, 2))]
    assert len(pairs) > 300
    err, se = _check_estimates(pairs)
    assert err < 1.5 * se + 0.005, (err, se)


def test_optimal_bands_rows_match_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm, weights in [(0.85, 128, (0.5, 0.5)), (0.7, 256, (0.5, 0.5)), (0.9, 64, (0.2, 0.8)),
                                         (0.5, 128, (0.9, 0.1))]:
        assert optimal_bands_rows(threshold, num_perm, *weights) == _optimal_param(threshold, num_perm, *weights)


def test_candidate_probability_is_an_s_curve_around_the_threshold():
    bands, rows = optimal_bands_rows(0.85, 128)
    p = candidate_probability(np.array([0.5, 0.85, 0.95]), bands, rows)
    assert p[0] < 0.01 and 0.3 < p[1] < 0.9 and p[2] > 0.99


def test_band_keys_equal_exactly_when_bands_equal():
    sig = np.arange(2 * 128, dtype=np.uint32).reshape(2, 128)
    sig[1, 16:] = sig[0, 16:]  # first band (rows 0-15) differs, the rest equal
    keys = band_keys(sig, 8, 16)
    assert keys.shape == (2, 8)
    assert (keys[0] == keys[1]).tolist() == [False] + [True] * 7


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="bands and dedup.near.rows go together"):
        MinHashConfig(bands=8)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        MinHashConfig(bands=20, rows=10)
    with pytest.raises(ValueError, match="threshold"):
        MinHashConfig(threshold=1.5)
    assert MinHashConfig(bands=4, rows=8).bands_rows() == (4, 8)
