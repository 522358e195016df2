"""Seeded corruptions of the real files the ingest tests use, through the ingest stages (each a table -> table
function, run here without Ray as Ray runs it on a block): truncated, bit-flipped and replaced images, WAV/FLAC
clips and PDFs, a PDF page's content stream damaged, and manifests full of bad lines.

The properties: no exception escapes; every intact asset beside the damaged ones comes out as the same row(s) as
in a clean run; every damaged asset or line is its own quarantine row naming its file or line (a cut or replaced
file always is: only a bit flip may leave a file that still reads); rows out = rows in (pages for PDFs).
Hypothesis runs derandomized (the same cases every run) with no deadline; the whole file takes ~20 s here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pymupdf
import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_multimodal import _images, _pdfs, damage_page

from ray_jobs.config import TokenizeConfig
from ray_jobs.ingest.audio import AudioConfig, AudioStage
from ray_jobs.ingest.images import ImageConfig, ImageStage
from ray_jobs.ingest.manifest import read_manifest
from ray_jobs.ingest.pdf import PdfConfig, PdfStage

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# No OCR (a page's text layer is taken as it is) and 20-dpi page images: Tesseract is 1-3 s a page, and
# corrupting a PDF never reaches it with damaged input (it reads the PNG we render). Its failures have their own
# tests in test_multimodal.py.
PDF = PdfConfig(ocr_min_words=0, dpi=20)


class Quiet(dict):
    """A dict of files or rows that prints as its keys: Hypothesis prints a failing case's fixtures."""

    def __repr__(self) -> str:
        return f"Quiet({ {k: sorted(v) if isinstance(v, dict) else '...' for k, v in self.items()} })"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """The intact files per modality: the ones test_multimodal.py and test_ingest.py make, and the third-party
    ones they read from ../shared/data when it is there."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("fuzz_sources")
    images, pdfs = _images(root), _pdfs(root)
    t = np.arange(22_050) / 22_050
    sf.write(root / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 22_050)
    out = {"image": {k: images[k].read_bytes() for k in ("a.png", "b.jpg")},
           "pdf": {"digital.pdf": pdfs["digital.pdf"].read_bytes()},
           "audio": {"tone.wav": (root / "tone.wav").read_bytes()}}
    if SHARED_DATA.is_dir():
        coco = sorted((SHARED_DATA / "coco_mini_captions" / "train2017").glob("*.jpg"))[0]
        out["image"][coco.name] = coco.read_bytes()
        linn = SHARED_DATA / "pdfs" / "scanned_ocrmypdf" / "linn.pdf"
        out["pdf"]["linn.pdf"] = linn.read_bytes()
        wavs = SHARED_DATA / "speech_ljspeech_coqui_tests" / "ljspeech" / "wavs"
        out["audio"].update({f"LJ001-0001.{e}": (wavs / f"LJ001-0001.{e}").read_bytes() for e in ("wav", "flac")})
    return Quiet(out)


@pytest.fixture(scope="module")
def stages():
    audio = AudioStage(AudioConfig(whisper_features=False), TokenizeConfig().tokenizer)
    audio.setup()
    return {"image": ImageStage(ImageConfig()), "pdf": PdfStage(PDF), "audio": audio}


@st.composite
def damage(draw, size: int) -> tuple:
    """A damage to a file of `size` bytes, kept small to print: ("cut", keep), ("flip", [(byte, bit)...]),
    ("zero", start, end) or ("replace", other bytes)."""
    kind = draw(st.sampled_from(["cut", "flip", "zero", "replace"]))
    if kind == "cut":
        return kind, draw(st.integers(0, size - 1))
    if kind == "flip":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=64))
    if kind == "zero":
        start = draw(st.integers(0, size - 1))
        return kind, start, draw(st.integers(start + 1, min(size, start + 4096)))
    return kind, draw(st.binary(max_size=4096))


def damaged(data: bytes, how: tuple) -> bytes:
    kind, *args = how
    if kind == "cut":
        return data[: args[0]]
    if kind == "replace":
        return args[0]
    out = bytearray(data)
    if kind == "flip":
        for pos, bit in args[0]:
            out[pos] ^= 1 << bit
    else:
        start, end = args
        out[start:end] = bytes(end - start)
    return bytes(out)


def _run(stage, folder: Path, files: dict[str, bytes], modality: str) -> tuple[pa.Table, dict[str, dict]]:
    """Write the files, a manifest of them (id = file name), and run the stage over it: (rows in, rows by id)."""
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "m.jsonl").write_text("".join(json.dumps({"id": n, "modality": modality, "file": n, "caption": "x",
                                                        "transcription": "a tone"}) + "\n" for n in files))
    table = read_manifest(folder / "m.jsonl")
    return table, {r["id"]: r for r in stage(table).to_pylist()}


@pytest.fixture(scope="module")
def clean_runs(sources, stages, tmp_path_factory) -> dict[str, dict[str, dict]]:
    return Quiet({m: _run(stages[m], tmp_path_factory.mktemp(f"clean_{m}"), sources[m], m)[1] for m in sources})


def _of(row_id: str, name: str) -> bool:
    """Is this the row (or a page row) of the file called `name`?"""
    return row_id == name or row_id.startswith(f"{name}:p")


def _same(row: dict, clean: dict) -> bool:
    keep = {k: v for k, v in clean.items() if k not in ("file", "_offset")}
    return {k: row[k] for k in keep} == keep


def _check_assets(modality, sources, stages, clean_runs, tmp_path_factory, data) -> None:
    name = data.draw(st.sampled_from(sorted(sources[modality])), label="source")
    how = data.draw(damage(len(sources[modality][name])), label="damage")
    kind, bad = how[0], damaged(sources[modality][name], how)
    if kind == "replace" and bad[:8] == sources[modality][name][:8]:
        return  # other bytes that begin as the file does are not "not this kind of file"
    folder = tmp_path_factory.mktemp("fuzz")
    files = {**sources[modality], f"bad_{name}": bad}
    table, out = _run(stages[modality], folder, files, modality)
    for intact in sources[modality]:  # beside a damaged file, the intact ones come out as in a clean run
        want = {k: r for k, r in clean_runs[modality].items() if _of(k, intact)}
        assert {k for k in out if _of(k, intact)} == want.keys()
        assert all(_same(out[k], r) for k, r in want.items())
    mine = [r for k, r in out.items() if _of(k, f"bad_{name}")]
    path = str((folder / f"bad_{name}").resolve())
    assert mine, "the damaged file has no row"
    for r in mine:  # image and audio rows get their status from `_error` in the job (ingest/job.py _finish)
        status = r.get("status") or ("quarantined" if r["_error"] else "kept")
        assert status in ("kept", "quarantined", "empty_page")
        assert (status == "quarantined") == (r["_error"] is not None)
        assert r["_error"] is None or r["_error"].startswith(f"{path}: ")
    if modality != "pdf":  # one row an asset
        assert len(out) == len(table) == len(files)
        if kind in ("cut", "replace"):  # nothing was lost silently: a cut or replaced file never reads
            assert mine[0]["_error"] is not None, (kind, mine[0])
    elif kind == "replace":
        assert [r["status"] for r in mine] == ["quarantined"]


@FUZZ
@given(data=st.data())
def test_damaged_images_are_quarantined_and_the_intact_ones_kept(sources, stages, clean_runs, tmp_path_factory, data):
    _check_assets("image", sources, stages, clean_runs, tmp_path_factory, data)


@FUZZ
@given(data=st.data())
def test_damaged_audio_is_quarantined_and_the_intact_clips_kept(sources, stages, clean_runs, tmp_path_factory, data):
    _check_assets("audio", sources, stages, clean_runs, tmp_path_factory, data)


@FUZZ
@given(data=st.data())
def test_damaged_pdfs_never_crash_and_intact_pages_stay(sources, stages, clean_runs, tmp_path_factory, data):
    _check_assets("pdf", sources, stages, clean_runs, tmp_path_factory, data)


@settings(FUZZ, max_examples=10)
@given(data=st.data())
def test_a_damaged_page_is_quarantined_and_the_other_pages_kept(sources, stages, clean_runs, tmp_path_factory,
                                                               data):
    name = data.draw(st.sampled_from(sorted(sources["pdf"])), label="pdf")
    pages = [k for k in clean_runs["pdf"] if k.startswith(f"{name}:p")]
    page = data.draw(st.integers(1, len(pages)), label="page")
    how = data.draw(st.sampled_from(["zlib", "syntax", "missing"]), label="damage")
    assume(pymupdf.open(stream=sources["pdf"][name], filetype="pdf")[page - 1].get_contents())  # not a blank page
    _, out = _run(stages["pdf"], tmp_path_factory.mktemp("page"), {name: damage_page(sources["pdf"][name], page, how)},
                  "pdf")
    assert sorted(out) == sorted(pages)
    assert out[f"{name}:p{page}"]["status"] == "quarantined" and f"page {page}: MuPDF" in out[f"{name}:p{page}"][
        "_error"]
    assert all(_same(out[k], clean_runs["pdf"][k]) for k in pages if k != f"{name}:p{page}")


# ------------------------------------------------------------------------------------------------ manifests

GOOD = {"image": "a.png", "pdf": "digital.pdf", "audio": "tone.wav"}
VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=1))


@st.composite
def manifest_line(draw, index: int) -> tuple[str, bytes]:
    """(kind, one manifest line): a good asset line, or one broken in one way."""
    modality = draw(st.sampled_from(sorted(GOOD)))
    rec = {"id": f"line{index}", "modality": modality, "file": GOOD[modality], "caption": "c"}
    kind = draw(st.sampled_from(["good", "missing", "wrong_type", "outside", "absolute", "not_json", "not_object",
                                 "bad_utf8", "bad_modality", "bad_page"]))
    if kind == "missing":
        del rec[draw(st.sampled_from(["id", "modality", "file"]))]
    elif kind == "wrong_type":
        key = draw(st.sampled_from(["id", "file", "caption", "transcription", "instruction", "response"]))
        rec[key] = draw(VALUES.filter(lambda v: not isinstance(v, str) and not (key == "id" and type(v) is int)
                                      and not (key != "id" and key != "file" and v is None)))
    elif kind == "outside":
        rec["file"] = "../" * draw(st.integers(1, 3)) + GOOD[modality]
    elif kind == "absolute":
        rec["file"] = draw(st.sampled_from(["/etc/hostname", "/", "/nonexistent/x.png", "/tmp"]))
    elif kind == "bad_modality":
        rec["modality"] = draw(VALUES.filter(lambda v: not (isinstance(v, str) and v in GOOD)))
    elif kind == "bad_page":
        rec.update(modality="pdf", file=GOOD["pdf"], page=draw(st.one_of(st.integers(max_value=0), st.booleans(),
                                                                          st.text(max_size=3), st.floats())))
    line = json.dumps(rec).encode()
    if kind == "not_json":
        line = line[: draw(st.integers(1, len(line) - 1))]
    elif kind == "not_object":
        other = st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))
        line = json.dumps(draw(other)).encode()
    elif kind == "bad_utf8":
        line = line.replace(b'"c"', b'"\xff\xfe"')
    return kind, line


@FUZZ
@given(lines=st.integers(1, 12).flatmap(lambda n: st.tuples(*[manifest_line(i) for i in range(n)])))
def test_every_manifest_line_is_one_row_and_every_bad_one_quarantined(sources, stages, tmp_path_factory, lines):
    folder = tmp_path_factory.mktemp("manifest")
    for name in GOOD.values():
        for modality in GOOD:
            if name in sources[modality]:
                (folder / name).write_bytes(sources[modality][name])
    (folder / "m.jsonl").write_bytes(b"".join(line + b"\n" for _, line in lines))
    table = read_manifest(folder / "m.jsonl")
    assert len(table) == len(lines) and table["_offset"].to_pylist() == list(range(1, len(lines) + 1))
    for (kind, _), error in zip(lines, table["_error"].to_pylist()):
        assert (error is None) == (kind == "good"), (kind, error)
    total = 0
    for modality in GOOD:  # as the ingest job splits them: lines without a modality go with the images
        mask = [m == modality or (modality == "image" and m is None) for m in table["modality"].to_pylist()]
        part = table.filter(pa.array(mask))
        if not len(part):
            continue
        out = stages[modality](part)
        rows = {}
        for r in out.to_pylist():
            rows.setdefault(r["_offset"], []).append(r)
        assert sorted(rows) == part["_offset"].to_pylist()
        for line, got in rows.items():
            if lines[line - 1][0] == "good":
                assert all(r["_error"] is None for r in got)
                assert len(got) == (3 if modality == "pdf" else 1)  # digital.pdf: 3 pages
            else:
                assert len(got) == 1 and got[0]["_error"].startswith(f"m.jsonl @ {line}: "), got[0]["_error"]
        total += len(part)
    assert total == len(lines)
