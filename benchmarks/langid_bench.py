"""Language-ID backends on lingua's 75-language test sentences: accuracy per language, and docs/s on one core.

    python benchmarks/langid_bench.py                     # every importable variant, ~10 minutes on one core
    python benchmarks/langid_bench.py --backends fasttext,langdetect,hybrid --per-lang 100

Data: ../shared/data/lingua_language_testdata/language-testdata/sentences/<iso639-1>.txt (Leipzig corpora via
lingua-py; 800 sentences a language, ja 329, zh 583). A prediction is right when its code equals the file name.
Prints markdown: a summary per backend, accuracy per language, the worst languages with what they were taken for,
accuracy and speed against max_chars on 20-sentence pseudo-documents, and the cost per row on the project's sample
corpus (shards/sample/parquet: web pages, e-mails, book chunks; paragraphs rather than sentences).
The hybrid's threshold was tuned on the first half of each language's sentences: "held-out" columns use the second.
"""

from __future__ import annotations

import os

# One core, one thread: set before numpy / lingua (rayon) start their pools. Figures are per core.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ[_var] = "1"
os.sched_setaffinity(0, {0})

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from ray_jobs.steps.clean.langid import LangIdConfig, LanguageDetector  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/lingua_language_testdata/language-testdata/sentences"

# The max_chars sweep goes to 3,000 characters, so the detectors read that much; no sentence is longer than 723
# characters, so the sentence figures are those of the default max_chars (1,000).
SWEEP = (100, 200, 500, 1000, 2000, 3000)

SAMPLE = Path(__file__).resolve().parents[1] / "shards/sample/parquet"

# name -> (LangIdConfig fields, sentences per language by default). langdetect reads ~400 sentences/s: 200 a
# language keeps it near 40 s; the others run on all 59,312 sentences. "hybrid" is the default hybrid config; the
# others each move one of its settings.
VARIANTS = {
    "fasttext": ({"backend": "fasttext"}, 0),
    "langdetect": ({"backend": "langdetect"}, 200),
    "lingua-low": ({"backend": "lingua", "lingua_low_accuracy": True}, 0),
    "lingua-high": ({"backend": "lingua", "lingua_low_accuracy": False}, 0),
    "hybrid": ({"backend": "hybrid"}, 0),
    "hybrid-low": ({"backend": "hybrid", "hybrid_low_accuracy": True}, 0),
    "hybrid-t0.5": ({"backend": "hybrid", "hybrid_threshold": 0.5}, 0),
    "hybrid-t0.95": ({"backend": "hybrid", "hybrid_threshold": 0.95}, 0),
    "hybrid-k3": ({"backend": "hybrid", "hybrid_top_k": 3}, 0),
}

# The 20 languages with the most pages in recent Common Crawl crawls (commoncrawl.github.io/cc-crawl-statistics,
# approximate order): listed first in the per-language table.
COMMON = ["en", "ru", "de", "ja", "zh", "es", "fr", "it", "pt", "pl", "nl", "vi", "tr", "id", "cs", "fa", "sv", "ko",
          "ar", "hu"]  # fmt: skip
# The target set: those 20 and the next 20 of lingua's 75 in the same statistics (approximate order).
COMMON_40 = COMMON + ["uk", "el", "ro", "da", "fi", "th", "sk", "nb", "bg", "he", "ca", "hr", "lt", "sr", "sl", "hi",
                      "et", "lv", "ms", "bn"]  # fmt: skip

# 20 consecutive sentences make one pseudo-document of ~2,900 characters; 10 of them per language.
DOC_SENTENCES, DOCS_PER_LANG = 20, 10


def load_sentences(data_dir: Path) -> dict[str, list[str]]:
    files = sorted(data_dir.glob("*.txt"))
    if not files:
        raise SystemExit(
            f"expected lingua's sentences/<iso639-1>.txt files in {data_dir}; found none. "
            "Pass --data-dir, or fetch ../shared/data."
        )
    # split("\n"), not splitlines(): 10 sentences (nb, fi) hold U+0085, which splitlines() would cut.
    return {f.stem: f.read_text(encoding="utf-8").rstrip("\n").split("\n") for f in files}


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc), in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def macro(per_lang: dict[str, float], langs: list[str] | None = None) -> float:
    values = [per_lang[lang] for lang in langs] if langs else list(per_lang.values())
    return sum(values) / len(values)


def timed_detect(detector: LanguageDetector, texts: list[str]) -> tuple[list[str], float]:
    """The codes, and docs/s of one detect call."""
    t0 = time.perf_counter()
    codes, _ = detector.detect(texts)
    return codes, len(texts) / (time.perf_counter() - t0)


def run_variant(name: str, sentences: dict[str, list[str]], per_lang: int) -> dict:
    fields, default_n = VARIANTS[name]
    n = per_lang or default_n
    before = rss_mb()

    # The pipeline's documents first, in a fresh process: what a clean worker pays on the sample corpus at the
    # default max_chars (detect_table's cut). The first pass includes lazily loaded models, the second is warm.
    sample_cfg = LangIdConfig(**fields)
    sample = pq.read_table(SAMPLE, columns=["text"])["text"]
    sample_heads = pc.utf8_slice_codeunits(sample, 0, sample_cfg.max_chars).to_pylist()
    data_mb = rss_mb() - before
    # The first detector of the process: the preloading backends load everything here, the hybrid almost nothing.
    t0 = time.perf_counter()
    sample_detector = LanguageDetector(sample_cfg)
    load_s = time.perf_counter() - t0
    load_mb = rss_mb() - before - data_mb
    _, sample_cold = timed_detect(sample_detector, sample_heads)
    _, sample_warm = timed_detect(sample_detector, sample_heads)
    sample_mb = rss_mb() - before - data_mb
    del sample_detector

    detector = LanguageDetector(LangIdConfig(**fields, max_chars=SWEEP[-1]))

    gold = [lang for lang, lines in sentences.items() for _ in (lines[:n] if n else lines)]
    texts = [line for lines in sentences.values() for line in (lines[:n] if n else lines)]
    detector.detect(texts[:50])  # warm caches outside the timed call
    # The first pass includes the models the hybrid loads lazily (one language at a time, as texts need them);
    # the second is the steady state of a worker that has seen these languages.
    codes, docs_per_s = timed_detect(detector, texts)
    _, warm_docs_per_s = timed_detect(detector, texts)

    hits: dict[str, list[bool]] = {lang: [] for lang in sentences}
    wrong: dict[str, Counter] = {lang: Counter() for lang in sentences}
    for g, p in zip(gold, codes, strict=True):
        hits[g].append(g == p)
        if g != p:
            wrong[g][p] += 1
    accuracy = {lang: sum(h) / len(h) for lang, h in hits.items()}
    held_out = {lang: sum(h[len(h) // 2 :]) / len(h[len(h) // 2 :]) for lang, h in hits.items()}

    # Accuracy and speed against max_chars on pseudo-documents: where more text stops helping.
    docs = {
        lang: [" ".join(lines[i : i + DOC_SENTENCES]) for i in range(0, DOC_SENTENCES * DOCS_PER_LANG, DOC_SENTENCES)]
        for lang, lines in sentences.items()
    }
    by_length = {}
    for max_chars in SWEEP:
        doc_gold = [lang for lang, ds in docs.items() for _ in ds]
        heads = [d[:max_chars] for ds in docs.values() for d in ds]
        t0 = time.perf_counter()
        doc_codes, _ = detector.detect(heads)
        doc_s = time.perf_counter() - t0
        doc_hits: dict[str, list[bool]] = {lang: [] for lang in docs}
        for g, p in zip(doc_gold, doc_codes, strict=True):
            doc_hits[g].append(g == p)
        by_length[max_chars] = (macro({k: sum(v) / len(v) for k, v in doc_hits.items()}), len(heads) / doc_s)

    # What a worker holds after 75 languages: every model loaded so far, lazily or not.
    grown_mb = rss_mb() - before - data_mb
    # Rows of the sample a hybrid sends to lingua: fastText's top-1 under the threshold.
    _, sample_scores = LanguageDetector(LangIdConfig(backend="fasttext")).detect(sample_heads)

    return {
        "name": name,
        "n": len(texts),
        "accuracy": accuracy,
        "held_out": held_out,
        "wrong": wrong,
        "docs_per_s": docs_per_s,
        "warm_docs_per_s": warm_docs_per_s,
        "load_s": load_s,
        "load_mb": load_mb,
        "rss_mb": grown_mb,
        "by_length": by_length,
        "sample_cold": sample_cold,
        "sample_warm": sample_warm,
        "sample_mb": sample_mb,
        "sample_unsure": float((sample_scores < sample_cfg.hybrid_threshold).mean()),
        "fields": fields,
    }


def report(results: list[dict]) -> str:
    out = ["## Trade-off: the 40 most common languages (sentences) and the sample corpus (paragraphs), one core", ""]
    out.append("| variant | macro 40, held-out half | macro 40, all | macro 75 | sentences/s (first pass) | "
               "sentences/s (warm) | RSS MB after 75 langs | sample docs/s cold / warm | sample ms/doc warm | "
               "sample RSS MB | sample rows to lingua |")  # fmt: skip
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        unsure = f"{r['sample_unsure']:.1%}" if r["fields"]["backend"] == "hybrid" else "-"
        out.append(
            f"| {r['name']} | {macro(r['held_out'], COMMON_40):.4f} | {macro(r['accuracy'], COMMON_40):.4f} | "
            f"{macro(r['accuracy']):.3f} | {r['docs_per_s']:,.0f} | {r['warm_docs_per_s']:,.0f} | "
            f"{r['rss_mb']:,.0f} | {r['sample_cold']:,.0f} / {r['sample_warm']:,.0f} | "
            f"{1000 / r['sample_warm']:.3f} | {r['sample_mb']:,.0f} | {unsure} |"
        )
    out += ["", "## Summary (sentences, one core)", ""]
    out.append("| backend | sentences | macro accuracy (75 langs) | languages never right | docs/s/core | load s | "
               "model RSS MB |")  # fmt: skip
    out.append("|---|---:|---:|---|---:|---:|---:|")
    for r in results:
        never = sorted(lang for lang, a in r["accuracy"].items() if a == 0)
        out.append(
            f"| {r['name']} | {r['n']:,} | {macro(r['accuracy']):.3f} | {len(never)}: {' '.join(never) or '-'} | "
            f"{r['docs_per_s']:,.0f} | {r['load_s']:.1f} | {r['load_mb']:,.0f} |"
        )

    langs = COMMON + sorted(set(results[0]["accuracy"]) - set(COMMON))
    out += ["", "## Accuracy per language (the 20 most common on the web first)", ""]
    out.append("| lang | " + " | ".join(r["name"] for r in results) + " |")
    out.append("|---|" + "---:|" * len(results))
    for lang in langs:
        out.append(f"| {lang} | " + " | ".join(f"{r['accuracy'][lang]:.3f}" for r in results) + " |")
    out.append("| **macro (75)** | " + " | ".join(f"**{macro(r['accuracy']):.3f}**" for r in results) + " |")
    out.append("| macro (40) | " + " | ".join(f"{macro(r['accuracy'], COMMON_40):.3f}" for r in results) + " |")
    top20 = [{lang: r["accuracy"][lang] for lang in COMMON} for r in results]
    out.append("| macro (top 20) | " + " | ".join(f"{macro(t):.3f}" for t in top20) + " |")

    out += ["", "## Worst 8 languages per backend, with what they were taken for", ""]
    for r in results:
        worst = sorted(r["accuracy"], key=lambda lang: r["accuracy"][lang])[:8]
        cells = [
            f"{lang} {r['accuracy'][lang]:.2f} ({', '.join(f'{p} {c}' for p, c in r['wrong'][lang].most_common(2))})"
            for lang in worst
        ]
        out.append(f"- **{r['name']}**: " + "; ".join(cells))

    out += ["", f"## Pseudo-documents ({DOC_SENTENCES} sentences, first N characters): macro accuracy / docs/s", ""]
    lengths = list(results[0]["by_length"])
    out.append("| backend | " + " | ".join(f"{n} chars" for n in lengths) + " |")
    out.append("|---|" + "---:|" * len(lengths))
    for r in results:
        out.append(
            f"| {r['name']} | " + " | ".join(f"{a:.3f} / {s:,.0f}" for a, s in r["by_length"].values()) + " |"
        )
    return "\n".join(out)


def main() -> None:
    available = [v for v in VARIANTS if v in ("fasttext", "langdetect") or importlib.util.find_spec("lingua")]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--backends", default=",".join(available), help=f"comma-separated, of {list(VARIANTS)}")
    parser.add_argument(
        "--per-lang", type=int, default=0, help="sentences per language for every backend (0: 200 for langdetect, "
        "all for the others)"
    )  # fmt: skip
    args = parser.parse_args()
    names = args.backends.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--backends expects names from {list(VARIANTS)}; got {unknown}.")
    sentences = load_sentences(args.data_dir)
    results = []
    for name in names:
        # A fresh process per backend, so that one's freed model does not hide the next one's memory.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(run_variant, name, sentences, args.per_lang).result())
    print(report(results))


if __name__ == "__main__":
    main()
