"""Near-duplicate benchmark corpus from real text, with known provenance and (optionally) exact ground truth.

    python benchmarks/make_dedup_corpus.py --out /tmp/dedupq/corpus --size-mb 20 --truth /tmp/dedupq/truth.parquet
    python benchmarks/make_dedup_corpus.py --out /tmp/dedup4g --size-mb 4000     # ~1 B tokens, streamed

Score removal methods on it with benchmarks/dedup_quality.py.

Base. The books of ../shared/data/gutenberg_subset_rcdm_uga/gutenberg_dickens_twain_shakespeare.tar.gz (Dickens,
Twain, Shakespeare; 110 MB) lose their Project Gutenberg header and footer (roughly: what lies outside the
"*** START OF" / "*** END OF" lines or the older "small print" markers) and are cut at blank lines into chunks of
2-6 KB. The collection has real near-duplicates (several editions of a play, collections that repeat single works,
repeated licence notices): they would make the ground truth wrong, so chunks are taken in a seeded random order
and a chunk whose 5-shingle Jaccard to a chunk taken before it is >= 0.4 is skipped (25 % of the chunks; see
SimilarityFilter). Unrelated chunks of one book are at 0.08-0.16.

Originals. The taken chunks (`g/<book>/<chunk>`), as many as the size needs. Past the ~77 MB of the base,
"remix rounds" make more: the sentences of the base (cut at 400 characters) shuffled with the round's seed and
regrouped into 2-6 KB documents (`mix<round>/<k>`): real sentences, each document drawing on dozens of sources, so
it is as far from every other document as unrelated text is, and larger corpora keep the duplicate rate asked for.

Derived documents. Each original gets Poisson(lambda) duplication events, lambda set so that a fraction --dup-rate
of all documents are derived (ids `<original id>#<k>`, `family` = the original's id, `parent` = what it was made
from). Event kinds (weights in KINDS):
  exact        an identical copy
  format       case and whitespace changes (upper/lower case, re-flowed lines, CRLF, double spaces, indents):
               identical to the original after normalisation
  near         word-level edits: each word substituted, preceded by an inserted word, or deleted with probability
               p, p chosen for a target Jaccard drawn uniformly in [0.6, 1.0)
  boilerplate  web-page prefix and suffix lines (navigation, cookie banner, copyright, tags)
  chain        3-5 copies, each a near-copy of the previous one at target Jaccard 0.86-0.90: neighbours are
               near-duplicates, the ends are not (copies 2, 3 and 5 are at ~0.78, ~0.70 and ~0.58 to the original)

Output. Rows `id, text, family, parent, kind` in one seeded random order, in zstd Parquet shards of --shard-mb MB
of text (part-00000.parquet, ...), and _info.json (args, counts by kind, MB, token estimate = bytes / 4). The plan
(which document goes where) is a few integer arrays; texts are made when their shard is filled, so memory holds
the base, the plan and one shard (peak RSS 0.43 GB for 20 MB, 0.76 GB for 400 MB).

Truth (--truth PATH, meant for corpora up to ~50 MB, which the scorers can handle): within each family, every pair
with exact Jaccard >= 0.5 of the sets of 5-character shingles of the normalised text
(`re.sub(r"\\s+", " ", text.lower()).strip()`), as Parquet `family, id_a, id_b, kind_a, kind_b, jaccard`.
Pairs across families are taken as dissimilar: 2,000 random cross-family pairs are checked and their largest
Jaccard printed (and kept in _info.json).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import tarfile
import time
from array import array
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
GUTENBERG = REPO.parent / "shared" / "data" / "gutenberg_subset_rcdm_uga" / "gutenberg_dickens_twain_shakespeare.tar.gz"

SHINGLE = 5
DOC_BYTES = (2000, 6000)  # document sizes are drawn uniformly in this range
BASE_MAX_JACCARD = 0.4  # a base chunk at least this similar to one taken before is a natural near-duplicate
TRUTH_MIN_JACCARD = 0.5
CROSS_SAMPLE = 2000
NEAR_JACCARD = (0.6, 1.0)
CHAIN_JACCARD = (0.86, 0.90)  # per hop
CHAIN_HOPS = (3, 5)
# Jaccard after word edits at rate p is about (1 - g p) / (1 + g p), g measured on 200 chunks at p = 0.01-0.15
# (1.05-1.14); the truth file has the exact values.
EDIT_GAIN = 1.08
KINDS = {"exact": 0.2, "format": 0.15, "near": 0.35, "boilerplate": 0.2, "chain": 0.1}  # event weights
KIND_NAMES = ("original", *KINDS)
ORIGINAL, CHAIN, BOILERPLATE = 0, KIND_NAMES.index("chain"), KIND_NAMES.index("boilerplate")
BOILERPLATE_BYTES = 350  # average size of the added lines, for the size plan
SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+")
UNIT_CHARS = 400  # remixes are made of sentences, longer ones cut to this: no source gives a remix much text
REMIX_PARAGRAPH = 6  # sentences a paragraph in remixed documents

START = re.compile(r"^\s*\*\*\*\s*START OF.*$|^.*\*END\*THE SMALL PRINT.*$|^\s*\[\"Small Print\" V\..*$", re.M | re.I)
END = re.compile(r"^\s*(\*\*\*\s*END OF|End of (the )?Project Gutenberg|End of this Etext)", re.M | re.I)
WORLD_LIBRARY_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>", re.S)  # repeated in every act of some editions

PREFIXES = ("Home | Books | Classics | Authors | About | Contact", "Skip to main content", "Advertisement",
            "Posted on {date} by {user}", "{title} - Free Online Library", "Log in   Register   Search",
            "Reading time: {n} min", "You are here: Home > Library > {title}")
SUFFIXES = ("Share this: Facebook | Twitter | Email | Print", "Copyright (c) {year} {site}. All rights reserved.",
            "Tags: {word}, {word}, {word}", "Previous page | Next page | Back to top",
            "We use cookies to improve your experience. By continuing to browse the site you agree to our use of "
            "cookies. Learn more | Accept", "{n} comments. Leave a reply: your email address will not be published.",
            "Page generated in 0.{n} seconds.", "Related: {title} | {title}")
USERS = ("admin", "bookworm42", "editor", "j.smith", "classics_fan", "librarian")
SITES = ("ReadFreeBooks.net", "classic-reads.org", "The Online Library", "ebooks4all.com", "LitArchive")


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def shingles(text: str) -> set[str]:
    """Set of 5-character shingles of the normalised text (the whole text when shorter)."""
    t = normalise(text)
    return {t[i:i + SHINGLE] for i in range(len(t) - SHINGLE + 1)} or {t}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


# ------------------------------------------------------------------------------------------------------------ base


def book_texts(path: Path):
    """(author, slug, text without the Project Gutenberg header/footer) for every book of the archive (the author
    is the archive's folder, e.g. "Dickens, Charles")."""
    with tarfile.open(path, "r|gz") as tar:
        for m in tar:
            name = Path(m.name.replace("\r", " "))
            if not m.isfile() or name.suffix != ".txt" or name.name.startswith("."):
                continue
            raw = tar.extractfile(m).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            if start := START.search(text):
                text = text[start.end():]
            if end := END.search(text):
                text = text[:end.start()]
            slug = re.sub(r"[^a-z0-9]+", "-", name.stem.lower()).strip("-")[:60]
            yield name.parts[0], slug, WORLD_LIBRARY_NOTICE.sub("", text)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs; one longer than a document is cut at line ends."""
    out = []
    for p in re.split(r"\n[ \t]*\n", text):
        p = p.strip("\n")
        if not p.strip():
            continue
        while len(p) > DOC_BYTES[1]:
            cut = p.rfind("\n", 0, DOC_BYTES[1] * 2 // 3)
            cut = cut if cut > 0 else DOC_BYTES[1] * 2 // 3
            out.append(p[:cut])
            p = p[cut:].lstrip("\n")
        out.append(p)
    return out


def group_sizes(sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Start indices (and the end) of consecutive groups of items whose sizes add up to a drawn document size:
    a group takes items until it reaches its size, the last one only if that keeps it within DOC_BYTES."""
    ends = np.cumsum(sizes)
    starts, pos = [], 0
    while pos < len(sizes):
        starts.append(pos)
        before = ends[pos - 1] if pos else 0
        reach = int(np.searchsorted(ends, before + rng.integers(*DOC_BYTES)))  # first item reaching the size
        if reach < len(sizes) and ends[reach] - before <= DOC_BYTES[1]:
            reach += 1
        pos = max(reach, pos + 1)
    return np.array(starts + [len(sizes)], dtype=np.int64)


class Base:
    """The books as paragraphs and 2-6 KB chunks of consecutive paragraphs."""

    def __init__(self, path: Path, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self.paras: list[str] = []
        self.chunk_ids: list[str] = []
        bounds: list[tuple[int, int]] = []
        para_bytes: list[np.ndarray] = []  # with the 2 bytes of the separator
        seen: set[str] = set()
        for _, slug, text in book_texts(path):
            while slug in seen:  # two titles with the same slug
                slug += "-2"
            seen.add(slug)
            paras = paragraphs(text)
            para_bytes.append(np.array([len(p.encode()) + 2 for p in paras], dtype=np.int64))
            starts = group_sizes(para_bytes[-1], rng)
            for k, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
                bounds.append((len(self.paras) + a, len(self.paras) + b))
                self.chunk_ids.append(f"g/{slug}/{k}")
            self.paras += paras
        self.para_bytes = np.concatenate(para_bytes)
        self.bounds = np.array(bounds, dtype=np.int64)
        csum = np.concatenate([[0], np.cumsum(self.para_bytes)])
        self.chunk_bytes = csum[self.bounds[:, 1]] - csum[self.bounds[:, 0]] - 2
        small = self.chunk_bytes < DOC_BYTES[0] // 2  # a book's tail or a lone short paragraph
        self.bounds, self.chunk_ids = self.bounds[~small], [c for c, s in zip(self.chunk_ids, small) if not s]
        self.chunk_bytes = self.chunk_bytes[~small]

    def chunk_text(self, c: int) -> str:
        a, b = self.bounds[c]
        return "\n\n".join(self.paras[a:b])


class SimilarityFilter:
    """Greedy filter of natural near-duplicates: add(item) refuses an item whose text (text_of(item)) has Jaccard
    >= limit to the text of an item added before. Candidates share an LSH band of one-permutation MinHash signatures
    (128 bins, 32 bands of 4 rows); a candidate whose Jaccard estimate is within MARGIN of the limit (3 standard
    errors) is decided by the exact Jaccard, one farther away by the estimate."""

    BINS, ROWS, MARGIN = 128, 4, 0.12

    def __init__(self, limit: float, seed: int, text_of) -> None:
        self.limit, self.text_of = limit, text_of
        self.salt = np.random.default_rng([seed, 2]).integers(1, 2**63, dtype=np.uint64)
        self.items: list = []
        self.sigs = np.empty((0, self.BINS), dtype=np.uint64)
        self.buckets: dict[bytes, list[int]] = {}

    def signature(self, text: str) -> np.ndarray:
        """One-permutation MinHash: the least shingle hash in each of 128 bins of the hash range."""
        cp = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        h = np.full(max(len(cp) - SHINGLE + 1, 1), self.salt, dtype=np.uint64)
        for j in range(SHINGLE):
            h = h * np.uint64(0x100000001B3) + cp[j:j + len(h)]
        for shift, mul in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):  # splitmix64 finaliser
            h = (h ^ (h >> np.uint64(shift))) * np.uint64(mul)
        h ^= h >> np.uint64(31)
        sig = np.full(self.BINS, np.iinfo(np.uint64).max, dtype=np.uint64)
        np.minimum.at(sig, (h >> np.uint64(57)).astype(np.intp), h)
        return sig

    def similar(self, text: str, sig: np.ndarray, keys: list[bytes]) -> bool:
        cands = np.array(sorted({i for key in keys for i in self.buckets.get(key, ())}), dtype=np.int64)
        if not len(cands):
            return False
        est = (self.sigs[cands] == sig).mean(axis=1)
        if est.max() >= self.limit + self.MARGIN:
            return True
        close = cands[np.argsort(-est)][:np.count_nonzero(est >= self.limit - self.MARGIN)]
        if not len(close):
            return False
        sh = shingles(text)
        return any(jaccard(sh, shingles(self.text_of(self.items[i]))) >= self.limit for i in close)

    def add(self, item) -> bool:
        text = self.text_of(item)
        sig = self.signature(text)
        keys = [bytes([b]) + sig[b * self.ROWS:(b + 1) * self.ROWS].tobytes() for b in range(self.BINS // self.ROWS)]
        if self.similar(text, sig, keys):
            return False
        n = len(self.items)
        self.items.append(item)
        if n == len(self.sigs):
            self.sigs = np.concatenate([self.sigs, np.empty((max(n, 1024), self.BINS), dtype=np.uint64)])
        self.sigs[n] = sig
        for key in keys:
            self.buckets.setdefault(key, []).append(n)
        return True


def sentence_units(paras: list[str], para_ids) -> np.ndarray:
    """Rows (paragraph, start, end) of the sentences of these paragraphs, cut at a space when over UNIT_CHARS."""
    rows = array("i")
    for p in para_ids:
        text, a = paras[p], 0
        for b in [m.end() for m in SENTENCE_END.finditer(text)] + [len(text)]:
            while b - a > UNIT_CHARS:
                cut = text.rfind(" ", a + UNIT_CHARS // 2, a + UNIT_CHARS)
                cut = cut + 1 if cut > 0 else a + UNIT_CHARS
                rows.extend((p, a, cut))
                a = cut
            if text[a:b].strip():
                rows.extend((p, a, b))
            a = b
    return np.frombuffer(rows, dtype=np.int32).reshape(-1, 3)


class Originals:
    """Original documents in plan order: base chunks free of natural near-duplicates, then remix rounds."""

    def __init__(self, base: Base, seed: int) -> None:
        self.base, self.seed = base, seed
        self.taken: list[int] = []  # base chunks, in plan order
        self.skipped = 0  # base chunks too similar to one taken before
        self.units = np.empty((0, 3), dtype=np.int32)  # sentences of the taken chunks, for remixes
        self.rounds: list[tuple[np.ndarray, np.ndarray]] = []  # (sentence order, document starts) of rounds 1..

    def _base_chunks(self):
        similar = SimilarityFilter(BASE_MAX_JACCARD, self.seed, self.base.chunk_text)  # freed once all are seen
        for c in np.random.default_rng([self.seed, 3]).permutation(len(self.base.chunk_ids)):
            if similar.add(int(c)):
                self.taken.append(int(c))
                yield 0, len(self.taken) - 1, int(self.base.chunk_bytes[c])
            else:
                self.skipped += 1

    def __iter__(self):
        """Yields (round, index, bytes) until the caller stops."""
        yield from self._base_chunks()
        self.units = sentence_units(self.base.paras, (p for c in self.taken for p in range(*self.base.bounds[c])))
        unit_bytes = np.array([len(self.unit(i).encode()) + 1 for i in range(len(self.units))], dtype=np.int64)
        while True:
            rng = np.random.default_rng([self.seed, 4, len(self.rounds)])
            order = rng.permutation(len(unit_bytes)).astype(np.int32)
            starts = group_sizes(unit_bytes[order], rng)
            self.rounds.append((order, starts))
            csum = np.concatenate([[0], np.cumsum(unit_bytes[order])])
            for k, size in enumerate(csum[starts[1:]] - csum[starts[:-1]] - 1):
                yield len(self.rounds), k, int(size)

    def unit(self, i: int) -> str:
        para, start, end = self.units[i]
        return self.base.paras[para][start:end].strip()

    def text(self, rnd: int, k: int) -> str:
        if rnd == 0:
            return self.base.chunk_text(self.taken[k])
        order, starts = self.rounds[rnd - 1]
        units = [self.unit(i) for i in order[starts[k]:starts[k + 1]]]
        return "\n\n".join(" ".join(units[i:i + REMIX_PARAGRAPH]) for i in range(0, len(units), REMIX_PARAGRAPH))

    def doc_id(self, rnd: int, k: int) -> str:
        return self.base.chunk_ids[self.taken[k]] if rnd == 0 else f"mix{rnd}/{k}"


# ------------------------------------------------------------------------------------------------------ transforms


def edit_rate(target_jaccard: float) -> float:
    """Word edit probability expected to give this 5-shingle Jaccard to the source."""
    return (1 - target_jaccard) / (EDIT_GAIN * (1 + target_jaccard))


def edit_words(text: str, p: float, rng: random.Random, vocab: list[str]) -> str:
    """Each word, with probability p: substituted, preceded by an inserted word, or deleted (1/3 each)."""
    out = []
    for i, tok in enumerate(re.split(r"(\s+)", text)):  # words at even positions, whitespace at odd
        if i % 2 or not tok or rng.random() >= p:
            out.append(tok)
            continue
        op = rng.randrange(3)
        if op == 0:
            out.append(rng.choice(vocab))
        elif op == 1:
            out.append(rng.choice(vocab) + " " + tok)
    return "".join(out)


FORMATS = {
    "upper": str.upper,
    "lower": str.lower,
    "reflow": lambda t: re.sub(r"(?<!\n)\n(?!\n)", " ", t),  # every paragraph on one line
    "crlf_spaces": lambda t: t.replace(" ", "  ").replace("\n", " \r\n"),
    "indent": lambda t: "\n".join("    " + line for line in t.split("\n")),
}


def reformat(text: str, rng: random.Random) -> str:
    for name in rng.sample(sorted(FORMATS), rng.randint(1, 2)):
        text = FORMATS[name](text)
    return text


def add_boilerplate(text: str, rng: random.Random, vocab: list[str]) -> str:
    def fill(template: str) -> str:
        return template.format(date=f"{rng.randint(1, 28)} {rng.choice(('March', 'June', 'October'))} "
                                    f"{rng.randint(2005, 2024)}", user=rng.choice(USERS), site=rng.choice(SITES),
                               year=rng.randint(2005, 2024), n=rng.randint(2, 99), word=rng.choice(vocab),
                               title=" ".join(rng.choice(vocab).capitalize() for _ in range(3)))

    head = [fill(t) for t in rng.sample(PREFIXES, rng.randint(1, 3))]
    tail = [fill(t) for t in rng.sample(SUFFIXES, rng.randint(1, 4))]
    return "\n".join(head) + "\n\n" + text + "\n\n" + "\n".join(tail)


# ------------------------------------------------------------------------------------------------------------ plan


class Plan:
    """Every document as (original, kind, copy number, first copy of its chain); text on demand, deterministic."""

    def __init__(self, base: Base, target_bytes: int, dup_rate: float, seed: int) -> None:
        self.seed = seed
        self.originals = Originals(base, seed)
        rng = np.random.default_rng([seed, 5])
        weights = np.array(list(KINDS.values()))
        weights = weights / weights.sum()
        docs_per_event = weights @ [sum(CHAIN_HOPS) / 2 if k == "chain" else 1 for k in KINDS]
        lam = dup_rate / (1 - dup_rate) / docs_per_event
        self.orig_round, self.orig_index = array("i"), array("q")
        self.orig, self.kind, self.copy, self.chain_start = array("q"), array("b"), array("i"), array("i")
        self.family_start = array("q")  # first row of each original's family: rows of a family are contiguous
        est = 0
        originals = iter(self.originals)
        while est < target_bytes:
            rnd, k, size = next(originals)
            o = len(self.orig_round)
            self.orig_round.append(rnd)
            self.orig_index.append(k)
            self.family_start.append(len(self.orig))
            self._row(o, ORIGINAL, 0, 0)
            est += size
            copy = 1
            for _ in range(rng.poisson(lam)):
                kind = 1 + int(rng.choice(len(KINDS), p=weights))
                hops = int(rng.integers(CHAIN_HOPS[0], CHAIN_HOPS[1] + 1)) if kind == CHAIN else 1
                for h in range(hops):
                    self._row(o, kind, copy + h, copy)
                    est += size + (BOILERPLATE_BYTES if kind == BOILERPLATE else 0)
                copy += hops
        self.family_start.append(len(self.orig))
        vocab_rng = random.Random(f"{seed}/vocab")
        self.vocab = [w for k in vocab_rng.sample(range(len(self.orig_round)), min(300, len(self.orig_round)))
                      for w in self.original_text(k).split()]

    def _row(self, o: int, kind: int, copy: int, chain_start: int) -> None:
        self.orig.append(o)
        self.kind.append(kind)
        self.copy.append(copy)
        self.chain_start.append(chain_start)

    def __len__(self) -> int:
        return len(self.orig)

    def original_text(self, o: int) -> str:
        return self.originals.text(self.orig_round[o], self.orig_index[o])

    def doc_id(self, i: int) -> str:
        family = self.originals.doc_id(self.orig_round[self.orig[i]], self.orig_index[self.orig[i]])
        return family if self.kind[i] == ORIGINAL else f"{family}#{self.copy[i]}"

    def row(self, i: int) -> dict:
        o, kind, copy = self.orig[i], self.kind[i], self.copy[i]
        family = self.originals.doc_id(self.orig_round[o], self.orig_index[o])
        parent = None if kind == ORIGINAL else family
        if kind == CHAIN and copy > self.chain_start[i]:
            parent = f"{family}#{copy - 1}"
        return {"id": self.doc_id(i), "text": self.text(i), "family": family, "parent": parent,
                "kind": KIND_NAMES[kind]}

    def text(self, i: int) -> str:
        o, kind, copy = self.orig[i], KIND_NAMES[self.kind[i]], self.copy[i]
        text = self.original_text(o)
        rng = random.Random(f"{self.seed}/{o}/{copy}")
        if kind == "format":
            return reformat(text, rng)
        if kind == "near":
            return edit_words(text, edit_rate(rng.uniform(*NEAR_JACCARD)), rng, self.vocab)
        if kind == "boilerplate":
            return add_boilerplate(text, rng, self.vocab)
        if kind == "chain":
            for hop in range(self.chain_start[i], copy + 1):
                hop_rng = random.Random(f"{self.seed}/{o}/{hop}")
                text = edit_words(text, edit_rate(hop_rng.uniform(*CHAIN_JACCARD)), hop_rng, self.vocab)
        return text  # original, exact, or the end of a chain


# ---------------------------------------------------------------------------------------------------------- output


def write_shards(plan: Plan, out: Path, shard_bytes: int, seed: int) -> dict:
    """Rows in a seeded random order, one shard in memory at a time."""
    out.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("family", pa.string()),
                        ("parent", pa.string()), ("kind", pa.string())])
    files, text_bytes, parquet_bytes = [], 0, 0
    rows: list[dict] = []
    size = 0

    def flush() -> None:
        nonlocal rows, size, parquet_bytes
        path = out / f"part-{len(files):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, compression="zstd")
        files.append(path.name)
        parquet_bytes += path.stat().st_size
        rows, size = [], 0

    for i in np.random.default_rng([seed, 6]).permutation(len(plan)):
        row = plan.row(int(i))
        n = len(row["text"].encode())
        size += n
        text_bytes += n
        rows.append(row)
        if size >= shard_bytes:
            flush()
    if rows:
        flush()
    return {"files": files, "text_bytes": text_bytes, "parquet_bytes": parquet_bytes}


def write_truth(plan: Plan, path: Path, seed: int) -> dict:
    """Exact within-family pairs with Jaccard >= 0.5; the largest Jaccard among random cross-family pairs."""
    cols: dict[str, list] = {k: [] for k in ("family", "id_a", "id_b", "kind_a", "kind_b", "jaccard")}
    for o in range(len(plan.family_start) - 1):
        rows = range(plan.family_start[o], plan.family_start[o + 1])
        if len(rows) < 2:
            continue
        ids = [plan.doc_id(i) for i in rows]
        sets = [shingles(plan.text(i)) for i in rows]
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                j = jaccard(sets[a], sets[b])
                if j >= TRUTH_MIN_JACCARD:
                    (x, y) = (a, b) if ids[a] < ids[b] else (b, a)
                    cols["family"].append(ids[0])
                    cols["id_a"].append(ids[x])
                    cols["id_b"].append(ids[y])
                    cols["kind_a"].append(KIND_NAMES[plan.kind[rows[x]]])
                    cols["kind_b"].append(KIND_NAMES[plan.kind[rows[y]]])
                    cols["jaccard"].append(j)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, compression="zstd")

    rng = np.random.default_rng([seed, 7])
    cross = []
    while len(cross) < CROSS_SAMPLE and len(plan.family_start) > 2:  # at least two families
        i, j = (int(x) for x in rng.integers(len(plan), size=2))
        if plan.orig[i] != plan.orig[j]:
            cross.append(jaccard(shingles(plan.text(i)), shingles(plan.text(j))))
    return {"path": str(path), "pairs": len(cols["jaccard"]),
            "pairs_ge_0.85": sum(j >= 0.85 for j in cols["jaccard"]),
            "cross_family_sample": len(cross), "cross_family_max_jaccard": round(max(cross, default=0.0), 4),
            "cross_family_mean_jaccard": round(float(np.mean(cross)), 4) if cross else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for the Parquet shards and _info.json")
    ap.add_argument("--size-mb", type=float, default=20.0, help="target total text size in MB (1e6 bytes)")
    ap.add_argument("--dup-rate", type=float, default=0.15, help="fraction of documents that are derived copies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-mb", type=float, default=64.0, help="MB of text per Parquet shard")
    ap.add_argument("--truth", type=Path, help="write the exact within-family pairs here (Parquet)")
    ap.add_argument("--source", type=Path, default=GUTENBERG, help="tar.gz of Project Gutenberg .txt books")
    args = ap.parse_args()
    if not 0 <= args.dup_rate < 1:
        ap.error("--dup-rate must be in [0, 1)")
    if args.out.exists() and any(args.out.glob("part-*.parquet")):
        ap.error(f"{args.out} already holds shards; give an empty or new folder")

    t0 = time.perf_counter()
    base = Base(args.source, args.seed)
    plan = Plan(base, int(args.size_mb * 1e6), args.dup_rate, args.seed)
    t_plan = time.perf_counter() - t0
    print(f"base: {len(base.chunk_ids):,} chunks ({base.chunk_bytes.sum() / 1e6:.1f} MB); taken "
          f"{len(plan.originals.taken):,}, {plan.originals.skipped:,} skipped as natural near-duplicates; "
          f"remix rounds: {len(plan.originals.rounds)}; plan: {len(plan):,} rows ({t_plan:.1f} s)", flush=True)
    shards = write_shards(plan, args.out, int(args.shard_mb * 1e6), args.seed)
    t_write = time.perf_counter() - t0 - t_plan
    kinds = dict(zip(KIND_NAMES, np.bincount(np.frombuffer(plan.kind, dtype=np.int8), minlength=len(KIND_NAMES))))
    mb = shards["text_bytes"] / 1e6
    info = {
        "readme": f"Near-duplicate benchmark corpus: {len(plan):,} documents, {mb:.1f} MB of text "
                  f"(~{shards['text_bytes'] / 4e6:.1f} M tokens), {1 - kinds['original'] / len(plan):.1%} derived "
                  f"(exact/format/near/boilerplate/chain copies with known family and parent) from Project "
                  f"Gutenberg chunks (Dickens, Twain, Shakespeare); made by benchmarks/make_dedup_corpus.py "
                  f"--size-mb {args.size_mb:g} --dup-rate {args.dup_rate:g} --seed {args.seed}",
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "rows": len(plan), "mb": round(mb, 3), "tokens_estimate": shards["text_bytes"] // 4,
        "parquet_mb": round(shards["parquet_bytes"] / 1e6, 3), "files": shards["files"],
        "kinds": {k: int(v) for k, v in kinds.items()},
        "families_with_copies": int(sum(plan.family_start[o + 1] - plan.family_start[o] > 1
                                        for o in range(len(plan.family_start) - 1))),
        "base": {"chunks": len(base.chunk_ids), "taken": len(plan.originals.taken),
                 "natural_near_duplicates_skipped": plan.originals.skipped,
                 "remix_rounds": len(plan.originals.rounds)},
        "seconds": {"plan": round(t_plan, 1), "write": round(t_write, 1)},
        "write_mb_per_s": round(mb / t_write, 2),
    }
    print(f"wrote {len(plan):,} rows, {mb:.1f} MB text, {shards['parquet_bytes'] / 1e6:.1f} MB Parquet in "
          f"{len(shards['files'])} shard(s) ({t_write:.1f} s, {mb / t_write:.1f} MB/s); kinds: {info['kinds']}",
          flush=True)
    if args.truth:
        t1 = time.perf_counter()
        info["truth"] = write_truth(plan, args.truth, args.seed)
        info["seconds"]["truth"] = round(time.perf_counter() - t1, 1)
        print(f"truth: {info['truth']['pairs']:,} pairs >= {TRUTH_MIN_JACCARD} ({info['truth']['pairs_ge_0.85']:,} "
              f">= 0.85) -> {args.truth}; max Jaccard over {info['truth']['cross_family_sample']:,} random "
              f"cross-family pairs: {info['truth']['cross_family_max_jaccard']} "
              f"(mean {info['truth']['cross_family_mean_jaccard']})")
    (args.out / "_info.json").write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
