"""MinHash signatures and LSH band keys, vectorised over an Arrow batch (no per-shingle Python).

Shingles. `char`: every `ngram` consecutive Unicode code points of the lower-cased, whitespace-folded text
(the classic datasketch recipe uses 5). `word`: every `ngram` consecutive whitespace-separated words. A
document shorter than one shingle gets a single shingle of its whole text; a document with no text gets no
signature at all (it would otherwise collide with every other empty document).

Hashing. A numba kernel decodes the UTF-8 of the lower-cased Arrow text, folds whitespace and hashes every
window of code points (or of word hashes) with a 64-bit polynomial finished by splitmix64; rensa (Rust) then
takes for each permutation i the min over windows x of (a_i x + b_i) >> 32 (mod 2^64, a_i, b_i random 64-bit):
Dietzfelbinger's multiply-add-shift, 2-independent, where datasketch needs a product modulo 2^61-1. Signatures
are comparable only under the same seed and rensa algorithm version (`RMinHash.ALGORITHM_VERSION`, recorded in
saved indexes). The estimate of Jaccard similarity keeps the MinHash error sqrt(J(1-J)/num_perm) (0.03 at
J=0.85, 128 permutations); `tests/test_minhash.py` checks it on real pairs.

LSH. A signature is cut into `bands` bands of `rows` values; two documents become candidates when any band
matches, with probability 1-(1-J^rows)^bands. `optimal_bands_rows` picks (bands, rows) minimising the
weighted areas of false positives below the threshold and false negatives above it, as datasketch does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from rensa import RMinHash

MAX_HASH = np.uint32(0xFFFFFFFF)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x100000001B3)  # FNV-64 prime: odd, so no two short windows fold to the same value by accident


@dataclass(frozen=True)
class MinHashConfig:
    shingle: str = "char"  # "char": code-point n-grams; "word": word n-grams
    ngram: int = 5  # 5-character shingles: the datasketch recipe; for words 3-5 is usual
    num_perm: int = 128  # error of a Jaccard estimate ~ sqrt(J(1-J)/num_perm): 0.03 at J=0.85
    seed: int = 1  # permutations are drawn from this seed; signatures are comparable only under the same seed
    threshold: float = 0.85  # Jaccard similarity from which two documents are near-duplicates
    bands: int = 0  # 0 = chosen with `rows` from the threshold and the weights below
    rows: int = 0
    fp_weight: float = 0.5  # weight of the false-positive area when choosing bands/rows
    fn_weight: float = 0.5  # weight of the false-negative area

    def __post_init__(self) -> None:
        if self.shingle not in ("char", "word"):
            raise ValueError(f"dedup.near.shingle must be 'char' or 'word'; got {self.shingle!r}")
        if self.ngram < 1 or self.num_perm < 2:
            raise ValueError(f"dedup.near.ngram must be >= 1 and num_perm >= 2; got {self.ngram}, {self.num_perm}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"dedup.near.threshold must be in (0, 1); got {self.threshold}")
        if (self.bands == 0) != (self.rows == 0):
            raise ValueError("dedup.near.bands and dedup.near.rows go together: set both, or both to 0 (automatic)")
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"dedup.near.bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        if self.fp_weight < 0 or self.fn_weight < 0 or self.fp_weight + self.fn_weight == 0:
            raise ValueError("dedup.near.fp_weight and fn_weight must be >= 0 and not both 0")

    def bands_rows(self) -> tuple[int, int]:
        if self.bands:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)


def candidate_probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Probability that two documents of Jaccard similarity `s` share at least one band."""
    return 1.0 - (1.0 - s ** rows) ** bands


def optimal_bands_rows(threshold: float, num_perm: int, fp_weight: float = 0.5,
                       fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands x rows <= num_perm minimising fp_weight x FP area + fn_weight x FN area."""
    lo = np.linspace(0.0, threshold, 1001)
    hi = np.linspace(threshold, 1.0, 1001)
    best, best_err = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - candidate_probability(hi, bands, rows), hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (bands, rows), err
    return best


def recall_bands_rows(threshold: float, num_perm: int, min_probability: float) -> tuple[int, int]:
    """(bands, rows) for candidates that an exact check decides: a pair at `threshold` must share a band with
    probability >= min_probability. Among those, the most rows, then the fewest bands: unrelated documents sit at
    Jaccard 0.05-0.16 (English, 5-character shingles), where the candidate probability is ~ bands x J^rows, so
    rows decide how many false candidates there are to check. 0.85, 128 permutations, 0.995: 14 bands x 7 rows
    (0.9955 at 0.85; 1.4e-6 at J 0.1 against 2e-5 for 20 x 6)."""
    for rows in range(num_perm, 0, -1):
        for bands in range(1, num_perm // rows + 1):
            if candidate_probability(np.float64(threshold), bands, rows) >= min_probability:
                return bands, rows
    raise ValueError(f"no bands x rows <= num_perm = {num_perm} makes a pair at Jaccard {threshold} a candidate "
                     f"with probability {min_probability}; lower dedup.near.candidate_recall or raise num_perm")


@numba.njit(cache=True, nogil=True)
def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: of a uint64 scalar, or in place on a uint64 array (decontam's kernels use it too)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _lower(text: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lower-cased text, nulls as ''. (Whitespace folding happens inside the kernel: as a RE2 regex it cost a
    third of the signature time.)"""
    text = pc.utf8_lower(pc.fill_null(text, ""))
    return text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text


def _units(text: pa.Array | pa.ChunkedArray, shingle: str) -> tuple[np.ndarray, np.ndarray]:
    """What shingles are made of, for the whole batch, and each document's offsets into it (int64, docs + 1).
    char: the UTF-8 bytes of the lower-cased text (decoded and whitespace-folded in the kernel); word: xxh3-64
    of each whitespace-separated word."""
    text = _lower(text)
    if shingle == "char":
        text = text.cast(pa.large_string())  # int64 offsets: a batch may exceed 2 GB of text
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset:text.offset + len(text) + 1]
        data = text.buffers()[2]
        return (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)), offsets
    # Unicode whitespace, as Python's str.split(), except that Arrow keeps the empty strings between two
    # separators and at the ends: they are dropped, so " a  b " has the words of "a b".
    words = pc.utf8_split_whitespace(text)
    flat = pc.list_flatten(words)
    keep = pc.greater(pc.binary_length(flat), 0)
    flat = pc.cast(flat.filter(keep), pa.binary()).to_pylist()  # bytes: xxhash 4 refuses str
    counts = np.bincount(pc.list_parent_indices(words).filter(keep).to_numpy(), minlength=len(text))
    h = xxhash.xxh3_64_intdigest
    values = np.fromiter((h(w) for w in flat), dtype=np.uint64, count=len(flat))
    return values, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _is_space(c) -> bool:
    """Python's str.isspace(): ASCII whitespace, the C0/C1 separators and Unicode White_Space."""
    if 32 < c < 0x85:  # printable ASCII and most Latin-1: the common case in two comparisons
        return False
    return (c == 32 or 9 <= c <= 13 or 28 <= c <= 31 or c == 0x85 or c == 0xA0 or c == 0x1680
            or 0x2000 <= c <= 0x200A or c == 0x2028 or c == 0x2029 or c == 0x202F or c == 0x205F or c == 0x3000)


@numba.njit(cache=True, nogil=True)
def _folded_code_points(raw: np.ndarray, lo: int, hi: int, scratch: np.ndarray) -> int:
    """Decode raw[lo:hi] (valid UTF-8: Arrow guarantees it) into scratch with runs of whitespace as one space and
    the ends trimmed; returns the count. Branch-free folding: every code point is written and k advances unless
    it is a space after a space (2x faster than branching on each character)."""
    k = 0
    after_space = True  # so leading whitespace is dropped
    j = lo
    while j < hi:
        c = np.uint32(raw[j])
        if c < 0x80:
            j += 1
        elif c < 0xE0:
            c = ((c & 0x1F) << 6) | (raw[j + 1] & 0x3F)
            j += 2
        elif c < 0xF0:
            c = ((c & 0x0F) << 12) | ((raw[j + 1] & 0x3F) << 6) | (raw[j + 2] & 0x3F)
            j += 3
        else:
            c = ((c & 0x07) << 18) | ((raw[j + 1] & 0x3F) << 12) | ((raw[j + 2] & 0x3F) << 6) | (raw[j + 3] & 0x3F)
            j += 4
        space = _is_space(c)
        scratch[k] = 32 if space else c
        k += 0 if space and after_space else 1
        after_space = space
    return k - 1 if after_space and k > 0 else k  # one trailing space


@numba.njit(cache=True, nogil=True)
def _hash_windows(units: np.ndarray, k: int, n: int, seed: np.uint64, out: np.ndarray) -> int:
    """64-bit hashes of the windows of n of the k units into out; a document shorter than n is one window.
    A polynomial over the window (odd multiplier) finished by splitmix64. It runs over all windows at once, one
    unit position at a time, so LLVM vectorises it."""
    if k == 0:
        return 0
    nw = max(k - n + 1, 1)
    for w in range(nw):
        out[w] = seed
    for j in range(min(n, k)):
        for w in range(nw):
            out[w] = out[w] * _POLY + units[w + j]
    for w in range(nw):
        out[w] = _mix(out[w])
    return nw


@numba.njit(cache=True, nogil=True)
def _window_hashes(units: np.ndarray, offsets: np.ndarray, first: int, last: int, n: int, seed: np.uint64,
                   char: bool, scratch: np.ndarray, xs: np.ndarray, starts: np.ndarray) -> None:
    """Window hashes of documents first..last-1 into xs, flat, document i's at xs[starts[i-first]:starts[i-first+1]].
    char: units are UTF-8 bytes, decoded and folded; word: units are word hashes, used as they are."""
    total = 0
    starts[0] = 0
    for d in range(first, last):
        lo, hi = offsets[d], offsets[d + 1]
        if char:
            k = _folded_code_points(units, lo, hi, scratch)
        else:
            k = hi - lo
            scratch[:k] = units[lo:hi]
        total += _hash_windows(scratch, k, n, seed, xs[total:])
        starts[d - first + 1] = total


def _windows(text: pa.Array | pa.ChunkedArray, cfg: MinHashConfig, chunk_units: int, chunk_docs: int):
    """(first, last, window hashes, starts) per run of at most chunk_docs documents holding about chunk_units
    units (at least one document). The buffers are reused from run to run: written in the cache, not page-faulted
    afresh (a flat buffer for a whole 10 MB batch made the kernel 1.6x slower)."""
    units, offsets = _units(text, cfg.shingle)
    docs = len(offsets) - 1
    longest = int(np.diff(offsets).max()) + 1 if docs else 1
    scratch = np.empty(longest, dtype=np.uint64)
    xs = np.empty(max(chunk_units, longest) + docs + 1, dtype=np.uint64)  # a document has <= max(units, 1) windows
    starts = np.empty(docs + 1, dtype=np.uint64)
    first = 0
    while first < docs:
        last = max(int(np.searchsorted(offsets, offsets[first] + chunk_units, "right")) - 1, first + 1)
        last = min(last, first + chunk_docs)
        _window_hashes(units, offsets, first, last, cfg.ngram, np.uint64(cfg.seed), cfg.shingle == "char",
                       scratch, xs, starts)
        count = last - first
        yield first, last, xs[:int(starts[count])], starts[:count + 1]
        first = last


def shingle_hashes(text: pa.Array | pa.ChunkedArray, cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every window hash of every document of a batch (flat uint64) and each document's start in it (int64,
    docs + 1): the exact shingle multisets, hashed as the signatures hash them. A document has at most max(units,
    1) windows, so one buffer of units + docs holds them all."""
    units, offsets = _units(text, cfg.shingle)
    docs = len(offsets) - 1
    scratch = np.empty(int(np.diff(offsets).max()) + 1 if docs else 1, dtype=np.uint64)
    xs = np.empty(len(units) + docs + 1, dtype=np.uint64)
    starts = np.zeros(docs + 1, dtype=np.uint64)
    if docs:
        _window_hashes(units, offsets, 0, docs, cfg.ngram, np.uint64(cfg.seed), cfg.shingle == "char", scratch, xs,
                       starts)
    return xs[:int(starts[-1])], starts.astype(np.int64)


@numba.njit(cache=True, nogil=True, inline="always")
def _slot(keys: np.ndarray, stamp: np.ndarray, mask: np.uint64, h: np.uint64, now: np.int32) -> np.uint64:
    """Where `h` is in the table of pair `now`, or the free slot it goes to (linear probing)."""
    slot = h & mask
    while stamp[slot] == now and keys[slot] != h:
        slot = (slot + np.uint64(1)) & mask
    return slot


@numba.njit(cache=True, nogil=True)
def _jaccard_pairs(xa: np.ndarray, sa: np.ndarray, xb: np.ndarray, sb: np.ndarray, out: np.ndarray) -> None:
    """out[i] = |A_i & B_i| / |A_i | B_i| of the distinct window hashes of the i-th pair, by one open-addressing
    table per pair (A's hashes in, B's looked up): 4 kB documents take ~0.11 ms a pair where sorting both sets and
    merging took ~0.57 ms (56,712 pairs at 1.1 GB: 32 CPU s). The table is reused across pairs; a slot is taken when
    its stamp is the current pair's. Window hashes end in splitmix64, so their low bits index the table as they are."""
    most = 1
    for i in range(len(out)):
        most = max(most, sa[i + 1] - sa[i] + sb[i + 1] - sb[i])
    size = 1
    while size < 2 * most:  # load factor <= 1/2
        size *= 2
    mask = np.uint64(size - 1)
    keys = np.empty(size, dtype=np.uint64)
    side = np.empty(size, dtype=np.uint8)  # 1: in A only so far, 2: in B only, 3: in both
    stamp = np.zeros(size, dtype=np.int32)  # 13 bytes a slot, 2-4 slots a window: 10 MB x 2 documents ~0.4 GB
    for i in range(len(out)):
        now = np.int32(i + 1)  # callers pass a batch of pairs (dedup: 1,024), far below 2^31
        in_a = only_b = common = 0
        for j in range(sa[i], sa[i + 1]):
            slot = _slot(keys, stamp, mask, xa[j], now)
            if stamp[slot] != now:
                stamp[slot], keys[slot], side[slot] = now, xa[j], 1
                in_a += 1
        for j in range(sb[i], sb[i + 1]):
            slot = _slot(keys, stamp, mask, xb[j], now)
            if stamp[slot] != now:
                stamp[slot], keys[slot], side[slot] = now, xb[j], 2
                only_b += 1
            elif side[slot] == 1:
                side[slot] = 3
                common += 1
        union = in_a + only_b
        out[i] = common / union if union else 1.0  # two empty texts are the same text


def exact_jaccard(text_a: pa.Array | pa.ChunkedArray, text_b: pa.Array | pa.ChunkedArray,
                  cfg: MinHashConfig) -> np.ndarray:
    """Row-wise Jaccard of the shingle sets of two text columns (float64): the definition the threshold means,
    not an estimate. 64-bit window hashes: two distinct shingles of a pair share a hash with probability ~n^2 /
    2^64 (1e-12 for 5,000 shingles), so the figure is exact for all practical purposes."""
    xa, sa = shingle_hashes(text_a, cfg)
    xb, sb = shingle_hashes(text_b, cfg)
    out = np.empty(len(text_a), dtype=np.float64)
    _jaccard_pairs(xa, sa, xb, sb, out)
    return out


def shingle_set(text: str, cfg: MinHashConfig) -> set[int]:
    """The exact shingle set of one text, hashed as the signatures hash it (for exact Jaccard checks)."""
    return {h for _, _, xs, _ in _windows(pa.array([text], pa.string()), cfg, 1 << 30, 1) for h in xs.tolist()}


# Per call into rensa: 128k units (characters or words), so the reused buffers (8 bytes a unit) stay within L2,
# and at most 255 documents: from 256 rows rensa spreads a call over rayon threads on every core, where a Ray
# task has one CPU.
_CHUNK_UNITS, _CHUNK_DOCS = 1 << 17, 255


def signatures(text: pa.Array | pa.ChunkedArray, cfg: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 [docs x num_perm], has_signature bool [docs]) for a batch of texts.

    Window hashes come from the numba kernel above; the permutations are rensa's
    (`RMinHash.digest_matrix_from_flat_token_hashes`: min over windows of (a_i x + b_i) >> 32 mod 2^64, in Rust,
    AVX-512 where the CPU has it, with the permuted values of frequent window hashes cached), 2x faster on
    English text than the same permutations in our numba kernel (benchmarks/RESULTS.md)."""
    docs = len(text)
    sig = np.full((docs, cfg.num_perm), MAX_HASH, dtype=np.uint32)
    has = np.zeros(docs, dtype=bool)
    for first, last, xs, starts in _windows(text, cfg, _CHUNK_UNITS, _CHUNK_DOCS):
        has[first:last] = np.diff(starts) > 0
        matrix = RMinHash.digest_matrix_from_flat_token_hashes(xs, starts, cfg.num_perm, cfg.seed)
        sig[first:last] = np.array(matrix.to_rows(), dtype=np.uint32)
    sig[~has] = MAX_HASH  # no text, no signature (made explicit: rensa's empty row is its starting value)
    return sig, has


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 key of each band of each signature [docs x bands]; equal bands give equal keys."""
    cut = sig[:, :bands * rows].reshape(len(sig), bands, rows).astype(np.uint64)
    key = np.full((len(sig), bands), np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    for j in range(rows):
        key = _mix(key * _POLY + cut[:, :, j])
    return key


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row-wise."""
    return (sig_a == sig_b).mean(axis=-1)
