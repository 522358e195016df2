"""Decontamination: training rows that share a word n-gram with an eval item (GPT-3, Brown et al. 2020, appendix C;
the Pile; lm-evaluation-harness's janitor).

Words. Lower-cased, punctuation and symbols (Unicode categories P and S) deleted, then split on whitespace (Python's
str.isspace set), as the harness's janitor does for ASCII (`str.translate` deleting `string.punctuation`), here for
every script: "Don't stop—now!" is the words `dont`, `stopnow` (deleted, not spaced, as the janitor does).

Hashes. A numba kernel walks the UTF-8 of the lower-cased Arrow text (no Python string per word), skips the code
points a table marks as punctuation or symbol (a RE2 regex deleting them took 4x the time of all the rest), and
hashes each word as FNV-1a over its bytes finished by splitmix64, each window of n word hashes with the polynomial
of `dedup.minhash._hash_windows` (same code, seed 0). 64-bit hashes: with 10^7 eval n-grams and 10^10 corpus windows
the expected number of false matches is 10^17 / 2^64 = 0.005.

Eval items. An item of k >= n words gives its k - n + 1 windows; an item of min_words <= k < n words gives one
window of its whole k words (GPT-3 looked for short items whole), matched against every k-word window of a row;
shorter items are not indexed (counted in `EvalIndex.skipped`).

Index. The distinct window hashes sorted (uint64), the item of each (int32: the first item, in file order, that
holds it) and a directory of the top bits (one int64 per 2-4 hashes), so a lookup scans ~3 neighbours instead of a
binary search over the whole array: ~14.7 bytes per distinct n-gram, 14 MiB per million (benchmarks/RESULTS.md).
The driver builds it once (steps/decontam/index.py); Ray Data puts the pass's function, index included, in the
object store once, and every worker process maps it from there without a copy of its own (read-only views).
Above a few hundred million n-grams (GBs per node) a join of corpus n-grams against the index would be the way:
not built.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.steps.base import Stage
from ray_jobs.steps.decontam.config import DecontamConfig
from ray_jobs.steps.dedup.minhash import _hash_windows, _is_space, _mix, _units

CONTAMINATED = "contaminated"
ITEM = "decontam_item"  # id of the eval item with the most matching windows (ties: the first item); null if none
SET = "decontam_set"  # the eval file it came from (its path below the eval_paths entry); null if none
NGRAMS = "decontam_ngrams"  # windows of the row found in the index (0: clean; null: row not examined)

_SEED = np.uint64(0)
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
# Directory of the top bits: 2^bits entries for N hashes with bits = ceil(log2 N) - 2, i.e. 2-4 hashes a slot (2-4
# bytes per n-gram); capped at 2^28 slots (2 GB) for indexes over 2^30 n-grams.
_MAX_BITS = 28


@cache
def deleted() -> np.ndarray:
    """bool per code point below U+20000: Unicode category P* or S* (string.punctuation is inside both). Every
    such code point is below U+20000 (Unicode 15: 8,560 of them); built once per process in ~20 ms."""
    return np.array([unicodedata.category(chr(c))[0] in "PS" for c in range(0x20000)], dtype=np.bool_)


@numba.njit(cache=True, nogil=True)
def _words(raw: np.ndarray, lo: int, hi: int, skip: np.ndarray, out: np.ndarray) -> int:
    """Hashes of the whitespace-separated words of raw[lo:hi] (valid UTF-8, lower-cased) into out, code points
    marked in `skip` left out; returns how many."""
    k = 0
    h = _FNV_OFFSET
    inside = False
    j = lo
    while j < hi:
        c = np.uint32(raw[j])
        if c < 0x80:
            width = 1
        elif c < 0xE0:
            c = ((c & 0x1F) << 6) | (raw[j + 1] & 0x3F)
            width = 2
        elif c < 0xF0:
            c = ((c & 0x0F) << 12) | ((raw[j + 1] & 0x3F) << 6) | (raw[j + 2] & 0x3F)
            width = 3
        else:
            c = ((c & 0x07) << 18) | ((raw[j + 1] & 0x3F) << 12) | ((raw[j + 2] & 0x3F) << 6) | (raw[j + 3] & 0x3F)
            width = 4
        if c < len(skip) and skip[c]:
            pass  # deleted: neither part of a word nor a break between two
        elif _is_space(c):
            if inside:
                out[k] = _mix(h)
                k += 1
                inside = False
        else:
            if not inside:
                h = _FNV_OFFSET
                inside = True
            for q in range(j, j + width):
                h = (h ^ np.uint64(raw[q])) * _FNV_PRIME
        j += width
    if inside:
        out[k] = _mix(h)
        k += 1
    return k


@numba.njit(cache=True, nogil=True)
def _item_windows(raw: np.ndarray, offsets: np.ndarray, skip: np.ndarray, n: int, floor: int, words: np.ndarray,
                  out_hash: np.ndarray, out_item: np.ndarray, counts: np.ndarray) -> int:
    """Every indexed window of every item (hash, item row) into out_*, each item's word count into counts;
    returns how many windows. Items under `floor` words give none."""
    total = 0
    for d in range(len(offsets) - 1):
        k = _words(raw, offsets[d], offsets[d + 1], skip, words)
        counts[d] = k
        if k < floor:
            continue
        nw = _hash_windows(words, k, n, _SEED, out_hash[total:])
        out_item[total:total + nw] = d
        total += nw
    return total


@numba.njit(cache=True, nogil=True)
def _match(raw: np.ndarray, offsets: np.ndarray, skip: np.ndarray, lengths: np.ndarray, hashes: np.ndarray,
           items: np.ndarray, directory: np.ndarray, shift: np.uint64, words: np.ndarray, xs: np.ndarray,
           found: np.ndarray, hits: np.ndarray, best: np.ndarray) -> None:
    """Per row: how many of its windows are in the index (hits) and the item most of them belong to (best, -1).
    lengths[0] = n: every n-word window (a row under n words is one window of its whole text, which finds an item
    equal to it); lengths[1:]: the short items' lengths, windowed only in rows longer than them."""
    for d in range(len(offsets) - 1):
        k = _words(raw, offsets[d], offsets[d + 1], skip, words)
        m = 0
        for li in range(len(lengths)):
            size = lengths[li]
            if li > 0 and k <= size:
                continue  # the n pass already looked the whole row up
            nw = _hash_windows(words, k, size, _SEED, xs)
            for w in range(nw):
                x = xs[w]
                top = x >> shift
                for p in range(directory[top], directory[top + 1]):
                    if hashes[p] >= x:
                        if hashes[p] == x:
                            found[m] = items[p]
                            m += 1
                        break
        hits[d] = m
        best[d] = -1
        if m:
            run = np.sort(found[:m])
            top_count, length = 0, 0
            for i in range(m):
                length = length + 1 if i > 0 and run[i] == run[i - 1] else 1
                if length > top_count:  # strict: on a tie the smaller (earlier) item stays
                    top_count = length
                    best[d] = run[i]


@dataclass(frozen=True)
class EvalIndex:
    """The eval sets' n-grams, ready for lookups (see the module doc). `sets[item_set[i]]` and `item_ids[i]` name
    item i."""

    ngram: int
    lengths: np.ndarray  # int64: ngram, then each short item length indexed whole
    hashes: np.ndarray  # uint64, sorted, distinct
    items: np.ndarray  # int32, the item of each hash
    directory: np.ndarray  # int64 [2^bits + 1]: hashes[directory[t]:directory[t + 1]] have top bits t
    shift: int  # 64 - bits
    item_ids: pa.Array  # string, one per item
    item_set: np.ndarray  # int32, one per item: index into sets
    sets: pa.Array  # string, the eval files
    skipped: int  # items under min_words words (empty ones included): not indexed

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.items.nbytes + self.directory.nbytes + self.item_ids.nbytes

    def match(self, text: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """(hits int32, best item int32 or -1) per row of `text`."""
        raw, offsets = _units(text, "char")  # lower-cased UTF-8 bytes, nulls as ''
        rows = len(offsets) - 1
        hits = np.zeros(rows, dtype=np.int32)
        best = np.full(rows, -1, dtype=np.int32)
        if rows == 0:
            return hits, best
        most = int(np.diff(offsets).max()) // 2 + 2  # words (and windows) of a row: a word and a space per 2 bytes
        words = np.empty(most, dtype=np.uint64)
        xs = np.empty(most, dtype=np.uint64)
        found = np.empty(most * len(self.lengths), dtype=np.int32)
        _match(raw, offsets, deleted(), self.lengths, self.hashes, self.items, self.directory, np.uint64(self.shift),
               words, xs, found, hits, best)
        return hits, best


def build_index(texts: pa.Array, item_ids: pa.Array, item_set: np.ndarray, sets: list[str], ngram: int,
                min_words: int) -> EvalIndex:
    """The index of eval items (their texts, ids, and the file each came from)."""
    raw, offsets = _units(texts, "char")
    items = len(offsets) - 1
    # an item of b bytes has at most (b + 1) // 2 words (a word and a space each), so at most b // 2 + 1 windows
    words = np.empty(int(np.diff(offsets).max()) // 2 + 2 if items else 1, dtype=np.uint64)
    out_hash = np.empty(len(raw) // 2 + items + 1, dtype=np.uint64)
    out_item = np.empty(len(out_hash), dtype=np.int32)
    counts = np.zeros(items, dtype=np.int64)
    # items under n words are indexed whole from min_words words (none when ngram <= min_words)
    floor = min(min_words, ngram)
    total = _item_windows(raw, offsets, deleted(), ngram, floor, words, out_hash, out_item, counts) if items else 0
    hashes, owner = out_hash[:total], out_item[:total]
    order = np.lexsort((owner, hashes))  # by hash, then item: the first item holding a hash names it
    hashes, owner = hashes[order], owner[order]
    first = np.ones(len(hashes), dtype=bool)
    first[1:] = hashes[1:] != hashes[:-1]
    hashes, owner = hashes[first], owner[first]
    bits = int(min(max(int(np.ceil(np.log2(max(len(hashes), 1)))) - 2, 1), _MAX_BITS))
    shift = 64 - bits
    slots = np.arange(2**bits, dtype=np.uint64) << np.uint64(shift)
    directory = np.append(np.searchsorted(hashes, slots), len(hashes)).astype(np.int64)
    short = np.unique(counts[(counts >= floor) & (counts < ngram)])
    return EvalIndex(
        ngram=ngram, lengths=np.concatenate([[ngram], short]).astype(np.int64), hashes=hashes, items=owner,
        directory=directory, shift=shift, item_ids=item_ids, item_set=item_set.astype(np.int32),
        sets=pa.array(sets, pa.string()), skipped=int(np.count_nonzero(counts < floor)))


class DecontamStage(Stage):
    """Kept rows that share an n-gram with an eval item get `decontam_item`, `decontam_set`, `decontam_ngrams`
    and, with action = "drop", status `contaminated`. Rows a step before did not keep pass through unexamined."""

    # The index travels with the stage: run once per worker process (runtime.apply), it is deserialized once
    # there (zero-copy numpy from the object store) and setup() loads the numba kernels from their cache once.
    stateful = True

    def __init__(self, cfg: DecontamConfig, index: EvalIndex) -> None:
        self.cfg = cfg
        self.index = index

    def setup(self) -> None:
        self.index.match(pa.array(["warm up the kernels"], pa.string()))

    def __call__(self, table: pa.Table) -> pa.Table:
        status = table[schema.STATUS] if schema.STATUS in table.column_names else schema.initial_status(table)
        kept = pc.equal(status, schema.KEPT)
        hits, best = self.index.match(table[schema.TEXT])
        found = pc.and_(kept, pa.array(hits > 0))
        item = where = pa.nulls(len(table), pa.string())
        if pc.any(found).as_py():  # then the index has items, and best names one on every found row
            pick = np.where(best >= 0, best, 0)
            item = pc.if_else(found, self.index.item_ids.take(pa.array(pick)), item)
            where = pc.if_else(found, self.index.sets.take(pa.array(self.index.item_set[pick])), where)
        table = table.drop_columns([c for c in (ITEM, SET, NGRAMS) if c in table.column_names])
        table = (table.append_column(ITEM, item).append_column(SET, where)
                 .append_column(NGRAMS, pc.if_else(kept, pa.array(hits), pa.nulls(len(table), pa.int32()))))
        if self.cfg.action == "drop":
            status = pc.if_else(found, CONTAMINATED, status)
        return schema.set_status(table, status)
