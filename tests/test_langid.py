"""Language identification (ray_jobs.steps.clean.langid): every importable backend, no Ray."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ray_jobs.steps.clean import langid
from ray_jobs.steps.clean.langid import BACKENDS, LangIdConfig, LanguageDetector, detect_table, iso639_1

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SENTENCES_DIR = SHARED_DATA / "lingua_language_testdata" / "language-testdata" / "sentences"

# Real sentences, two a language, copied from the Leipzig Corpora Collection (wortschatz.uni-leipzig.de, CC BY) as
# redistributed in lingua-py's language-testdata/sentences (github.com/pemistahl/lingua-py, Apache-2.0).
SENTENCES = {
    "en": [
        "Here, in a region abundant with natural beauty, golfers will surely be rewarded with an exceptional golf "
        "experience.",
        "Exhibitors are also responsible to comply with all rules and regulations contained in the Exhibitor Manual.",
    ],
    "de": [
        "L. Ron Hubbard hat uns die Technologie gegeben, mit der wir alle frei sein können.",
        "Dann werden vom TSV Buchen, der am Sonntag die Helfer für das Turnier abstellte, zwei Teams mit von der "
        "Partie sein.",
    ],
    "fr": [
        "Peu de tourisme de masse donc en Tanzanie faute de facilités d'hébergement.",
        "La livraison est réputée effectuée par la délivrance au Client du produit commandé.",
    ],
    "es": [
        "De todas formas, cualquier persona interesada en los temas que se presentan se puede descargar las unidades "
        "y trabajarlas a título individual.",
        "Brasil Finalmente, para que las empresas mejoren su competitividad deben conseguir niveles aceptables de "
        "calidad.",
    ],
    "ru": [
        "Когда он начал говорить, то казалось, что он приспосабливает реальность к своим потребностям.",
        "Даже гулять он выводил пса не на бульвар, а на глухие пустыри и на задворки, где их никто не видел.",
    ],
    "zh": [
        "2002年的台湾，各金融机构都磨刀霍霍准备在逐渐起飞的财富管理业务，抢得一席之地。",
        "1969年6月，台湾德仪正式在台北华国饭店租用办公室，同时也在中和南势角租用三层楼民房，同年10月德仪中和厂的半导体封装、"
        "测试生产线正式开工。",
    ],
    "ja": [
        "クロノたちが13年ぶりに再会！",
        "それまでに5便ほど大阪行きがあるのだが電車と違って時間があるから早いのに載るというわけにはいかず。"
        "3時間ほど空港内で時間を潰すことに。",
    ],
    "ar": [
        "أما الورق الذي نعرفه في هذه الأيام, وأساليب انتاجه, كان قد تم اكتشافه في الصين قبل حوالي ألفي سنة.",
        "هذه المشكلة ليست مشكلة ينفرد بها مجلس النواب في دولة إسرائيل.",
    ],
}
TEXTS = [text for texts in SENTENCES.values() for text in texts]
GOLD = [lang for lang, texts in SENTENCES.items() for _ in texts]

HAS_LINGUA = importlib.util.find_spec("lingua") is not None
BACKEND_PARAMS = [
    pytest.param(b, marks=pytest.mark.skipif(b == "lingua" and not HAS_LINGUA, reason="lingua not installed"))
    for b in BACKENDS
]


@pytest.fixture(scope="module", params=BACKEND_PARAMS)
def detector(request: pytest.FixtureRequest) -> LanguageDetector:
    return LanguageDetector(LangIdConfig(backend=request.param))


def test_real_sentences_get_their_language(detector: LanguageDetector) -> None:
    codes, scores = detector.detect(TEXTS)
    assert codes == GOLD
    assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
    assert np.all((scores > 0.0) & (scores <= 1.0))


def test_null_empty_and_letterless_texts_are_und_with_score_zero(detector: LanguageDetector) -> None:
    texts = [None, "", "   \n\t ", "12345 - 67,89", "🙂🙂 !!", SENTENCES["en"][0]]
    codes, scores = detector.detect(texts)
    assert codes == ["und"] * 5 + ["en"]
    assert scores[:5].tolist() == [0.0] * 5


def test_empty_batch(detector: LanguageDetector) -> None:
    codes, scores = detector.detect([])
    assert codes == [] and scores.dtype == np.float32 and scores.shape == (0,)


def test_newlines_and_tabs_are_read_as_spaces(detector: LanguageDetector) -> None:
    text = SENTENCES["de"][1].replace(" ", "\n", 3).replace(" ", "\t", 2) + "\r\n"
    assert detector.detect([text])[0] == ["de"]


def test_same_text_same_answer_in_any_batch_and_any_detector(detector: LanguageDetector) -> None:
    codes, scores = detector.detect(TEXTS)
    again_codes, again_scores = detector.detect(TEXTS)
    reversed_codes, reversed_scores = detector.detect(TEXTS[::-1])
    fresh_codes, fresh_scores = LanguageDetector(detector.cfg).detect(TEXTS)
    assert codes == again_codes == reversed_codes[::-1] == fresh_codes
    np.testing.assert_array_equal(scores, again_scores)
    np.testing.assert_array_equal(scores, reversed_scores[::-1])
    np.testing.assert_array_equal(scores, fresh_scores)


def test_a_lone_surrogate_does_not_break_the_batch(detector: LanguageDetector) -> None:
    broken = SENTENCES["fr"][0] + " \ud800"  # what json.loads makes of a truncated "\ud800" escape
    assert detector.detect([broken, SENTENCES["ru"][0]])[0] == ["fr", "ru"]


def test_detect_rejects_a_bare_string_and_non_text_items(detector: LanguageDetector) -> None:
    with pytest.raises(TypeError, match=r"detect\(\[text\]\)"):
        detector.detect("one text")
    with pytest.raises(TypeError, match="item 1 is bytes"):
        detector.detect(["ok", b"bytes"])


def test_only_the_first_max_chars_are_read() -> None:
    german, english = SENTENCES["de"][0], " ".join(SENTENCES["en"] * 20)
    short = LanguageDetector(LangIdConfig(backend="fasttext", max_chars=len(german)))
    assert short.detect([german + " " + english])[0] == ["de"]
    assert LanguageDetector(LangIdConfig(backend="fasttext")).detect([german + " " + english])[0] == ["en"]


def test_backend_labels_become_iso_639_1() -> None:
    assert [iso639_1(x) for x in ("zh-cn", "zh-tw", "no", "EN", "nn", "ceb", None)] == [
        "zh", "zh", "nb", "en", "nn", "ceb", "und"
    ]  # fmt: skip


def test_models_load_and_run_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("language ID tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for backend in BACKENDS:
        if backend == "lingua" and not HAS_LINGUA:
            continue
        assert LanguageDetector(LangIdConfig(backend=backend)).detect(SENTENCES["en"][:1])[0] == ["en"]


def test_config_errors_name_the_choices_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="'fasttext', 'langdetect', 'lingua'; got 'cld3'"):
        LangIdConfig(backend="cld3")
    with pytest.raises(ValueError, match="max_chars must be >= 1; got 0"):
        LangIdConfig(max_chars=0)
    with pytest.raises(TypeError, match="max_chars must be an int; got str"):
        LangIdConfig(max_chars="1000")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="lingua_low_accuracy must be a bool"):
        LangIdConfig(lingua_low_accuracy="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expects a LangIdConfig; got dict"):
        LanguageDetector({"backend": "fasttext"})  # type: ignore[arg-type]
    monkeypatch.setattr(langid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ValueError, match=r"pip install 'ray_jobs\[lingua\]'"):
        LangIdConfig(backend="lingua")


def test_config_is_frozen_with_fasttext_default() -> None:
    cfg = LangIdConfig()
    assert (cfg.backend, cfg.max_chars) == ("fasttext", 1000)
    with pytest.raises(AttributeError):
        cfg.backend = "langdetect"  # type: ignore[misc]


@pytest.fixture(scope="module")
def fasttext_detector() -> LanguageDetector:
    return LanguageDetector(LangIdConfig(backend="fasttext"))


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_detect_table_appends_lang_and_score(fasttext_detector: LanguageDetector, text_type: pa.DataType) -> None:
    table = pa.table({"id": [1, 2, 3], "text": pa.array([SENTENCES["ja"][1], None, SENTENCES["es"][0]], text_type)})
    out = detect_table(fasttext_detector, table)
    assert out.column_names == ["id", "text", "lang", "lang_score"]
    assert out.schema.field("lang").type == pa.string() and out.schema.field("lang_score").type == pa.float32()
    assert out.column("lang").to_pylist() == ["ja", "und", "es"]
    assert out.column("lang_score")[1].as_py() == 0.0
    assert out.slice(0, 2).column("id").to_pylist() == [1, 2]


def test_detect_table_cuts_multibyte_text_at_max_chars_characters() -> None:
    chinese = SENTENCES["zh"][0]  # 39 characters, 3 bytes each
    detector = LanguageDetector(LangIdConfig(backend="fasttext", max_chars=len(chinese)))
    table = pa.table({"body": [chinese + " " + " ".join(SENTENCES["en"] * 20)]})
    assert detect_table(detector, table, text_col="body").column("lang").to_pylist() == ["zh"]


def test_detect_table_errors(fasttext_detector: LanguageDetector) -> None:
    with pytest.raises(ValueError, match=r"text column 'text'; the table has \['body'\]"):
        detect_table(fasttext_detector, pa.table({"body": ["x"]}))
    with pytest.raises(TypeError, match="string or large_string; it is int64"):
        detect_table(fasttext_detector, pa.table({"text": [1]}))
    with pytest.raises(ValueError, match=r"already has \['lang'\]"):
        detect_table(fasttext_detector, pa.table({"text": ["x"], "lang": ["en"]}))


@pytest.mark.shared_data
@pytest.mark.parametrize("lang", list(SENTENCES))
def test_fasttext_on_lingua_testdata(fasttext_detector: LanguageDetector, lang: str) -> None:
    path = SENTENCES_DIR / f"{lang}.txt"
    if not path.exists():
        pytest.skip(f"needs ../shared/data (lingua's test sentences): {path} does not exist")
    lines = path.read_text(encoding="utf-8").split("\n")[:100]
    codes, _ = fasttext_detector.detect(lines)
    # fastText is right on 93-100 % of these languages' first 100 sentences (benchmarks/results_langid.md).
    assert sum(code == lang for code in codes) / len(lines) >= 0.9
