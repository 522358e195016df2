"""Images, PDFs (PyMuPDF + real Tesseract) and audio (libsndfile + soxr) on real files: files made here with the
real libraries, and the third-party ones in ../shared/data when present."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from ray_jobs.config import TokenizeConfig
from ray_jobs.ingest.audio import AudioConfig, AudioStage, load_mono_16k
from ray_jobs.ingest.images import ImageConfig, ImageStage
from ray_jobs.ingest.manifest import coco_manifest, read_manifest
from ray_jobs.ingest.pdf import EMPTY_PAGE, PdfConfig, PdfStage

PHRASE = "The quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches"


def _manifest(tmp_path: Path, rows: list[dict], allowed_roots: tuple[str, ...] = ()) -> pa.Table:
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return read_manifest(path, allowed_roots)


# ------------------------------------------------------------------------------------------------ images


def _images(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {}
    pic = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG")):
        pic.save(tmp_path / name, fmt)
        files[name] = tmp_path / name
    files["copy.png"] = tmp_path / "copy.png"
    files["copy.png"].write_bytes(files["a.png"].read_bytes())
    jpg = files["b.jpg"].read_bytes()
    files["truncated.jpg"] = tmp_path / "truncated.jpg"
    files["truncated.jpg"].write_bytes(jpg[: len(jpg) // 2])
    files["bomb.png"] = tmp_path / "bomb.png"  # 20,000 x 20,000 pixels in a few kB
    Image.new("1", (20_000, 20_000)).save(files["bomb.png"])
    files["text.png"] = tmp_path / "text.png"
    files["text.png"].write_text("not an image")
    return files


def test_images_are_described_hashed_and_bad_ones_quarantined(tmp_path):
    files = _images(tmp_path)
    rows = [{"id": k, "modality": "image", "file": k, "caption": f"caption {k}"} for k in files]
    out = ImageStage(ImageConfig(max_pixels=50_000_000, resize_max_side=200, perceptual_hash=True))(
        _manifest(tmp_path, rows))
    got = {r["id"]: r for r in out.to_pylist()}
    assert got["b.jpg"]["format"] == "JPEG" and (got["b.jpg"]["width"], got["b.jpg"]["height"]) == (200, 150)
    assert Image.open(io.BytesIO(got["a.png"]["image"])).size == (200, 150)  # resized, written as JPEG
    assert got["a.png"]["content_hash"] == got["copy.png"]["content_hash"] != got["b.jpg"]["content_hash"]
    assert got["a.png"]["phash"] == got["copy.png"]["phash"]
    assert "truncated" in got["truncated.jpg"]["_error"] or "corrupt" in got["truncated.jpg"]["_error"]
    assert "decompression bomb" in got["bomb.png"]["_error"] and "400000000 pixels" in got["bomb.png"]["_error"]
    assert "not an image" in got["text.png"]["_error"]
    assert all(got[k]["_error"] is None for k in ("a.png", "b.jpg", "copy.png"))


def test_manifest_lines_that_are_not_assets_are_quarantined(tmp_path):
    table = _manifest(tmp_path, [{"id": "x", "modality": "video", "file": "v.mp4"}, "{not json",
                                 {"id": "y", "modality": "pdf"}, {"id": "z", "modality": "pdf", "file": "f.pdf",
                                                                  "page": 0}])
    errors = table["_error"].to_pylist()
    assert "modality must be one of image, pdf, audio; found 'video'" in errors[0]
    assert "malformed JSON" in errors[1] and "missing file" in errors[2] and "page must be a 1-based" in errors[3]


def test_coco_captions_become_image_rows(shared_data):
    coco = shared_data / "coco_mini_captions"
    table = coco_manifest(coco / "annotations" / "captions_train2017.json", coco / "train2017")
    assert len(table) == 400 and table["_error"].null_count == 400
    out = ImageStage(ImageConfig())(table.slice(0, 12))
    assert out["_error"].null_count == 12 and all(w > 0 for w in out["width"].to_pylist())


# ------------------------------------------------------------------------------------------------ PDFs


def _pdfs(tmp_path: Path) -> dict[str, Path]:
    import pymupdf

    files = {}
    doc = pymupdf.open()
    for i in range(2):
        doc.new_page().insert_text((72, 72), f"Page {i + 1}. " + PHRASE + ". " + PHRASE, fontsize=11)
    doc.new_page()  # a blank third page
    files["digital.pdf"] = tmp_path / "digital.pdf"
    doc.save(files["digital.pdf"])
    # a scanned page: the text only as pixels, no text layer
    src = pymupdf.open()
    page = src.new_page(width=612, height=200)
    page.insert_text((36, 60), PHRASE[:50], fontsize=16)
    page.insert_text((36, 100), PHRASE[50:], fontsize=16)
    png = page.get_pixmap(dpi=300).tobytes("png")
    scan = pymupdf.open()
    scan.new_page(width=612, height=200).insert_image(pymupdf.Rect(0, 0, 612, 200), stream=png)
    files["scanned.pdf"] = tmp_path / "scanned.pdf"
    scan.save(files["scanned.pdf"])
    files["encrypted.pdf"] = tmp_path / "encrypted.pdf"
    doc.save(files["encrypted.pdf"], encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    files["broken.pdf"] = tmp_path / "broken.pdf"  # a header and no page tree: PyMuPDF repairs it to 0 pages
    files["broken.pdf"].write_bytes(b"%PDF-1.7\n1 0 obj <<>> garbage")
    files["garbage.pdf"] = tmp_path / "garbage.pdf"
    files["garbage.pdf"].write_bytes(np.random.default_rng(1).integers(0, 255, 4000, dtype=np.uint8).tobytes())
    return files


def _cer(got: str, want: str) -> float:
    import difflib

    a, b = " ".join(got.split()), " ".join(want.split())
    return 1 - difflib.SequenceMatcher(None, a, b).ratio()


def test_pdf_pages_text_layer_ocr_fallback_and_quarantine(tmp_path):
    files = _pdfs(tmp_path)
    rows = [{"id": k, "modality": "pdf", "file": k} for k in files]
    out = PdfStage(PdfConfig(ocr_min_words=5, dpi=50))(_manifest(tmp_path, rows))
    got = {r["id"]: r for r in out.to_pylist()}
    assert [got[f"digital.pdf:p{i}"]["ocr"] for i in (1, 2)] == [False, False]
    assert got["digital.pdf:p1"]["text"].startswith("Page 1. The quick brown fox")
    assert got["digital.pdf:p3"]["status"] == EMPTY_PAGE and got["digital.pdf:p3"]["ocr"]  # blank: OCR found nothing
    scanned = got["scanned.pdf:p1"]
    assert scanned["ocr"] and _cer(scanned["text"], PHRASE) < 0.05  # real Tesseract on the rendered page
    assert Image.open(io.BytesIO(scanned["image"])).format == "PNG"
    assert "encrypted PDF" in got["encrypted.pdf"]["_error"] and got["encrypted.pdf"]["status"] == "quarantined"
    assert "empty PDF: no pages" in got["broken.pdf"]["_error"]
    assert "malformed PDF" in got["garbage.pdf"]["_error"]


def test_ocr_of_the_scanned_linn_pdf_against_its_transcript(shared_data, tmp_path):
    folder = shared_data / "pdfs" / "scanned_ocrmypdf"
    table = _manifest(tmp_path, [{"id": "linn", "modality": "pdf", "file": str(folder / "linn.pdf")}], (str(folder),))
    (page,) = PdfStage(PdfConfig(render=False))(table).to_pylist()
    assert page["ocr"] and page["status"] == "kept"
    assert _cer(page["text"], (folder / "linn.txt").read_text()) < 0.1


# ------------------------------------------------------------------------------------------------ audio


def test_audio_is_mono_16k_with_features_and_labels(tmp_path):
    import soundfile as sf

    rate, seconds = 44_100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([np.sin(2 * math.pi * 440 * t), np.sin(2 * math.pi * 880 * t)], axis=1) * 0.3
    sf.write(tmp_path / "tone.flac", stereo, rate)
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    samples, src_rate, dur = load_mono_16k(str(tmp_path / "tone.flac"))
    assert src_rate == rate and dur == pytest.approx(seconds) and len(samples) == 24_000
    # the resampled tone keeps its frequencies: spectral peaks at 440 and 880 Hz
    spectrum = np.abs(np.fft.rfft(samples))
    peaks = sorted(np.argsort(spectrum)[-2:] * 16_000 / len(samples))
    assert peaks == pytest.approx([440, 880], abs=2)
    rows = [{"id": "tone", "modality": "audio", "file": "tone.flac", "transcription": "a pure tone"},
            {"id": "bad", "modality": "audio", "file": "bad.wav"}]
    out = AudioStage(AudioConfig(), TokenizeConfig().tokenizer)(_manifest(tmp_path, rows)).to_pylist()
    tone, bad = out
    assert len(tone["log_mel"]) == 80 and len(tone["log_mel"][0]) == 1 + 24_000 // 160
    assert np.array(tone["whisper_features"]).shape == (80, 3000)
    assert tone["labels"] and "undecodable audio" in bad["_error"]


@pytest.mark.parametrize("n_fft", [0, 1024])
def test_log_mel_equals_torch_stft_at_either_fft_size(n_fft):
    """The log-mel against an independent STFT (torch.stft: the 25 ms Hann window centred in n_fft, reflect
    padding), through the same Slaney mel filters; n_fft 1024 (the seed's recipe) gives 513 frequency bins."""
    import torch
    from transformers.audio_utils import mel_filter_bank

    from ray_jobs.ingest.audio import log_mel

    rng = np.random.default_rng(0)
    t = np.arange(8_000) / 16_000
    samples = (0.3 * np.sin(2 * math.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
    ours = log_mel(samples, AudioConfig(n_fft=n_fft))
    size = n_fft or 512
    spec = torch.stft(torch.from_numpy(samples.astype(np.float64)), n_fft=size, hop_length=160, win_length=400,
                      window=torch.hann_window(400, periodic=True, dtype=torch.float64), center=True,
                      pad_mode="reflect", return_complex=True).abs().numpy() ** 2
    mel = mel_filter_bank(num_frequency_bins=size // 2 + 1, num_mel_filters=80, min_frequency=0.0,
                          max_frequency=8_000, sampling_rate=16_000, norm="slaney", mel_scale="slaney")
    want = np.log(np.maximum(mel.T @ spec, 1e-10))
    assert spec.shape[0] == size // 2 + 1 and ours.shape == want.shape == (80, 51)
    np.testing.assert_allclose(ours, want, atol=1e-3)
    with pytest.raises(ValueError, match="power of two >= the window of 400"):
        AudioConfig(n_fft=256)


def _whisper_tokenizer(shared_data, folder: Path):
    """Whisper's multilingual tokenizer built here from openai/whisper's own BPE ranks file, with its special
    tokens in openai/whisper's order (tokenizer.py): the ids a Whisper model was trained on, without the hub."""
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ranks = shared_data / "tokenizers" / "whisper_tiktoken" / "multilingual.tiktoken"
    specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{code}|>" for code in LANGUAGES], "<|translate|>",
                "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    tok = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    tok.add_special_tokens(specials)
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return ranks, pattern, specials


def test_transcripts_get_whisper_labels_from_a_local_whisper_tokenizer(shared_data, tmp_path):
    import soundfile as sf
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from transformers import WhisperTokenizer

    ranks, pattern, specials = _whisper_tokenizer(shared_data, tmp_path / "whisper")
    t = np.arange(8_000) / 16_000
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 16_000)
    text = "And so, my fellow Americans: ask not what your country can do for you."
    rows = [{"id": "tone", "modality": "audio", "file": "tone.wav", "transcription": text}]
    cfg = AudioConfig(tokenizer=str(tmp_path / "whisper"), whisper_features=False)
    labels = AudioStage(cfg, TokenizeConfig().tokenizer)(_manifest(tmp_path, rows))["labels"].to_pylist()[0]
    mergeable = load_tiktoken_bpe(str(ranks))  # openai/whisper's encoder: tiktoken over the same ranks
    enc = tiktoken.Encoding("whisper", pat_str=pattern, mergeable_ranks=mergeable,
                            special_tokens={s: len(mergeable) + i for i, s in enumerate(specials)})
    prefix = [enc.encode_single_token(s) for s in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                                   "<|notimestamps|>")]
    assert prefix[:2] == [50258, 50259]  # Whisper's own ids
    assert labels == prefix + enc.encode(text) + [enc.eot_token]
    reader = WhisperTokenizer.from_pretrained(str(tmp_path / "whisper"))
    assert reader.decode(labels, skip_special_tokens=True) == text
    with pytest.raises(ValueError, match="not a folder. Nothing is fetched"):
        AudioStage(AudioConfig(tokenizer="openai/whisper-tiny"), TokenizeConfig().tokenizer).setup()


def test_ljspeech_clips_in_three_formats_decode_alike(shared_data):
    wavs = shared_data / "speech_ljspeech_coqui_tests" / "ljspeech" / "wavs"
    decoded = {ext: load_mono_16k(str(wavs / f"LJ001-0001.{ext}")) for ext in ("wav", "flac", "mp3")}
    wav = decoded["wav"][0]
    assert np.allclose(decoded["flac"][0], wav, atol=1e-4)  # lossless
    n = min(len(wav), len(decoded["mp3"][0]))
    assert np.corrcoef(wav[:n], decoded["mp3"][0][:n])[0, 1] > 0.9  # lossy, aligned


def test_same_bytes_in_another_file_is_a_duplicate_but_captions_of_one_file_are_not():
    from ray_jobs.ingest.job import _hash_bucket, duplicate_files

    table = pa.table({"id": ["a1", "a2", "b", "c", "q"], "file": ["a.jpg", "a.jpg", "b.jpg", "c.jpg", "q.jpg"],
                      "content_hash": ["f" * 32, "f" * 32, "f" * 32, "e" * 32, None],
                      "status": ["kept", "kept", "kept", "kept", "quarantined"]})
    out = {r["id"]: r for r in duplicate_files(_hash_bucket(1)(table)).to_pylist()}
    assert {k: r["status"] for k, r in out.items()} == {"a1": "kept", "a2": "kept", "b": "exact_duplicate",
                                                        "c": "kept", "q": "quarantined"}
    assert out["b"]["duplicate_of"] == "a1" and out["a2"]["duplicate_of"] is None


# ------------------------------------------------------------------------------------------------ bad inputs


def test_manifest_assets_must_resolve_under_its_folder_or_an_allowed_root(tmp_path):
    """`../`, absolute paths and symlinks that leave the manifest's folder are quarantined with the root to allow;
    `allowed_roots` lets them in (resolved after symlinks, so a link out of an allowed root is still refused)."""
    folder, other = tmp_path / "manifest", tmp_path / "other"
    (folder / "sub").mkdir(parents=True)
    other.mkdir()
    png = _images(tmp_path)["a.png"].read_bytes()
    for f in (folder / "in.png", tmp_path / "up.png", other / "x.png"):
        f.write_bytes(png)
    (folder / "link.png").symlink_to(other / "x.png")
    (other / "back.png").symlink_to(tmp_path / "up.png")
    names = {"in": "sub/../in.png", "up": "../up.png", "abs": str(other / "x.png"), "link": "link.png",
             "back": str(other / "back.png")}
    rows = [{"id": k, "modality": "image", "file": v} for k, v in names.items()]

    def errors(allowed: tuple[str, ...]) -> dict[str, str | None]:
        table = _manifest(folder, rows, allowed)
        assert table["id"].to_pylist() == list(names) and table["modality"].to_pylist() == ["image"] * 5
        return dict(zip(table["id"].to_pylist(), table["_error"].to_pylist()))

    got = errors(())
    assert got["in"] is None
    assert got["up"] == (f"manifest.jsonl @ 2: file '../up.png' resolves to {tmp_path.resolve() / 'up.png'}, outside "
                         f"the manifest's folder {folder.resolve()} and ingest.allowed_roots (none); move it under "
                         f"the manifest's folder or add {tmp_path.resolve()} to ingest.allowed_roots")
    assert all(f"add {other.resolve()} to ingest.allowed_roots" in got[k] for k in ("abs", "link"))
    got = errors((str(other),))
    assert got["in"] is None and got["abs"] is None and got["link"] is None
    assert f"and ingest.allowed_roots ({other.resolve()})" in got["up"]
    assert f"resolves to {tmp_path.resolve() / 'up.png'}" in got["back"]  # a link out of the allowed root
    out = ImageStage(ImageConfig())(_manifest(folder, rows, (str(other),)))
    assert out["width"].to_pylist() == [400, None, 400, 400, None]  # the refused files are never opened


def test_coco_file_names_must_stay_in_the_image_folder(tmp_path):
    images = tmp_path / "train"
    images.mkdir()
    _images(images)
    (tmp_path / "secret.png").write_bytes((images / "a.png").read_bytes())
    captions = tmp_path / "captions_train.json"
    captions.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../secret.png"}, {"id": 3}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "noise"}, {"id": 11, "image_id": 2, "caption": "x"},
                        {"id": 12, "image_id": 3, "caption": "no file name"}, {"id": 13, "image_id": 1, "caption": 5},
                        "not an annotation", {"id": 10, "image_id": 1, "caption": "the same id again"}]}))
    table = coco_manifest(captions, images)
    errors = table["_error"].to_pylist()
    assert len(table) == 6 and table["id"].to_pylist()[:2] == ["captions_train.json:0", "coco:2:11"]
    assert "resolves to" in errors[1] and f"add {tmp_path.resolve()} to ingest.allowed_roots" in errors[1]
    assert "caption 12 names image 3, which is not in `images` (or has no file_name)" in errors[2]
    assert "caption must be a string; found int 5" in errors[3]
    assert errors[4] == ("captions_train.json @ 4: expected an annotation object with id, image_id and caption; "
                         "found str 'not an annotation'")
    repeated = "captions_train.json: id 'coco:1:10' is on annotations 0, 5: every annotation needs its own id"
    assert [e is not None and e.startswith(repeated) for e in errors] == [True] + [False] * 4 + [True]
    assert coco_manifest(captions, images, (str(tmp_path),))["_error"].to_pylist()[1] is None


def test_manifest_fields_of_the_wrong_type_are_quarantined_never_coerced(tmp_path):
    lines = ["\ufeff" + json.dumps({"id": "bom", "modality": "image", "file": "a.png"}),  # a UTF-8 BOM: still read
             {"id": ["a"], "modality": "image", "file": "a.png"},
             {"id": "f", "modality": "image", "file": 7},
             {"id": "nul", "modality": "image", "file": "a\u0000.png"},
             {"id": "b", "modality": "pdf", "file": "x.pdf", "page": True},
             {"id": "c", "modality": "image", "file": "a.png", "caption": ["a", "list"]},
             {"id": 0, "modality": "audio", "file": "t.wav"},
             {"id": "twice", "modality": "image", "file": "a.png"},
             {"id": "twice", "modality": "image", "file": "b.png"},
             '"a string"', "[1, 2]"]
    table = _manifest(tmp_path, lines)
    errors = table["_error"].to_pylist()
    assert len(table) == len(lines) and table["id"].to_pylist()[0] == "bom" and errors[0] is None
    assert "id must be a string or an integer; found list ['a']" in errors[1]
    assert "file must be a path (a string); found int 7" in errors[2]
    assert "file must be a path (a string); found a NUL character in 'a\\x00.png'" in errors[3]
    assert "page must be a 1-based integer; found True" in errors[4]
    assert "caption must be a string; found list ['a', 'list']" in errors[5]
    assert errors[6] is None and table["id"].to_pylist()[6] == "0"
    assert errors[7] == errors[8] == ("manifest.jsonl: id 'twice' is on lines 8, 9: every line needs its own id "
                                      "(it names the row); give each line a unique id")
    assert "expected a JSON object per line, found str" in errors[9] and "found list" in errors[10]
    assert all(f"manifest.jsonl @ {i + 1}: " in e for i, e in enumerate(errors) if e and i < 7)


def damage_page(pdf: bytes, number: int, how: str) -> bytes:
    """The PDF with the first content stream of page `number` (1-based) damaged: "zlib" (bytes that are not the
    deflate data its filter says), "syntax" (operators cut inside a string), "missing" (/Contents names an object
    the file does not have). MuPDF reads all three without an exception: the page comes out blank or partial."""
    import pymupdf

    doc = pymupdf.open(stream=pdf, filetype="pdf")
    page = doc[number - 1]
    xref = page.get_contents()[0]
    if how == "zlib":
        doc.update_stream(xref, b"\x00not deflate data" * 40, compress=False)
        doc.xref_set_key(xref, "Filter", "/FlateDecode")
    elif how == "syntax":
        doc.update_stream(xref, b"BT /F1 12 Tf 72 72 Td (cut here" + bytes(range(256)) + b" Tj ET q q 1 2 cm Do")
    else:
        assert how == "missing", how
        doc.xref_set_key(page.xref, "Contents", "99999 0 R")
    return doc.tobytes()


@pytest.mark.parametrize("how", ["zlib", "syntax", "missing"])
def test_a_page_with_a_damaged_content_stream_is_its_own_quarantine_row(shared_data, tmp_path, how):
    src = (shared_data / "pdfs" / "text_pdfplumber" / "issue-53-example.pdf").read_bytes()  # 5 pages of text
    (tmp_path / "clean.pdf").write_bytes(src)
    (tmp_path / "damaged.pdf").write_bytes(damage_page(src, 3, how))
    rows = [{"id": k, "modality": "pdf", "file": f"{k}.pdf"} for k in ("clean", "damaged")]
    out = {r["id"]: r for r in PdfStage(PdfConfig(dpi=20))(_manifest(tmp_path, rows)).to_pylist()}
    assert sorted(out) == sorted(f"{k}:p{n}" for k in ("clean", "damaged") for n in range(1, 6))
    bad = out["damaged:p3"]
    assert (bad["status"], bad["page"], bad["num_pages"], bad["text"], bad["image"]) == ("quarantined", 3, 5, None,
                                                                                         None)
    assert bad["_error"].startswith(f"{(tmp_path / 'damaged.pdf').resolve()}: page 3: MuPDF reported damage while "
                                    f"reading the page (")
    assert bad["_error"].endswith("it would come out blank or partial; re-export the PDF from its source")
    for n in (1, 2, 4, 5):
        kept = out[f"damaged:p{n}"]
        assert kept["status"] == "kept" and kept["_error"] is None and kept["text"] == out[f"clean:p{n}"]["text"]
    assert all(out[f"clean:p{n}"]["status"] == "kept" for n in range(1, 6))


def test_pages_too_large_to_render_are_checked_before_rendering(tmp_path):
    """`max_page_pixels` on the page's size: a page to OCR over it is quarantined (Tesseract at a lower dpi would
    give worse text silently); the kept image of a page with a text layer is rendered at the dpi that fits."""
    import pymupdf

    doc = pymupdf.open()
    doc.new_page(width=2000, height=2000)  # blank, so OCR'd: 8,333 x 8,333 = 69.4 M pixels at 300 dpi
    doc.new_page(width=2000, height=2000).insert_text((72, 72), PHRASE, fontsize=11)  # 2,667^2 = 7.1 M at 96 dpi
    doc.new_page().insert_text((72, 72), PHRASE, fontsize=11)  # A4: 794 x 1,123 at 96 dpi
    poster = doc.new_page(width=14_400, height=14_400)  # PDF's largest page (200 in), times a UserUnit of 1,000
    doc.xref_set_key(poster.xref, "UserUnit", "1000")
    doc.save(tmp_path / "big.pdf")
    table = _manifest(tmp_path, [{"id": "big", "modality": "pdf", "file": "big.pdf"}])
    out = {r["page"]: r for r in PdfStage(PdfConfig(ocr_min_words=5, max_page_pixels=4_000_000))(table).to_pylist()}
    assert [out[n]["status"] for n in (1, 2, 3, 4)] == ["quarantined", "kept", "kept", "quarantined"]
    assert out[1]["_error"].endswith(
        "page 1: the page is 2000 x 2000 pt with no text layer to read; OCR at 300 dpi would render 69,444,444 "
        "pixels, over ingest.pdf.max_page_pixels = 4,000,000; raise the limit (Tesseract holds ~5 bytes a pixel) "
        "or lower ingest.pdf.ocr_dpi")
    assert "OCR at 300 dpi would render 3,600,000,000,000,000 pixels" in out[4]["_error"]  # 60 M x 60 M
    w, h = Image.open(io.BytesIO(out[2]["image"])).size
    assert w == h and 1990 <= w and w * h <= 4_000_000 and PHRASE in out[2]["text"]
    assert Image.open(io.BytesIO(out[3]["image"])).size == (794, 1123)
    # without the cap MuPDF itself refuses the poster's render: an exception of its own, quarantined with the page
    (row,) = PdfStage(PdfConfig(ocr_min_words=0, max_page_pixels=10**18))(
        _manifest(tmp_path, [{"id": "big", "modality": "pdf", "file": "big.pdf", "page": 4}])).to_pylist()
    assert row["status"] == "quarantined" and "page 4: MuPDF could not read the page: " in row["_error"]


def test_tesseract_errors_and_its_time_limit_quarantine_only_their_page(tmp_path):
    import pymupdf

    files = _pdfs(tmp_path)
    doc = pymupdf.open(files["digital.pdf"])
    doc.select([0])
    doc.insert_pdf(pymupdf.open(files["scanned.pdf"]))  # page 1: a text layer; page 2: a scan, OCR'd
    doc.save(tmp_path / "mixed.pdf")
    table = _manifest(tmp_path, [{"id": "mixed", "modality": "pdf", "file": "mixed.pdf"}])
    for cfg, reason in ((PdfConfig(ocr_timeout_s=0.01), "page 2: Tesseract ran over ingest.pdf.ocr_timeout_s = "
                                                         "0.01 s and was stopped; raise the limit"),
                        (PdfConfig(ocr_langs=("xyz",)), "page 2: Tesseract failed: ")):
        text, scan = PdfStage(dataclasses.replace(cfg, ocr_min_words=5, render=False))(table).to_pylist()
        assert text["status"] == "kept" and text["text"].startswith("Page 1. The quick brown fox")
        assert scan["status"] == "quarantined" and reason in scan["_error"] and scan["page"] == 2
    assert "xyz" in scan["_error"]  # Tesseract's own message names the missing language pack


def test_images_cut_anywhere_or_not_images_are_quarantined_with_the_reason(tmp_path):
    files = _images(tmp_path)
    png, jpg = files["a.png"].read_bytes(), files["b.jpg"].read_bytes()
    damaged = {"png_end.png": png[:-1], "png_half.png": png[: len(png) // 2], "jpg_end.jpg": jpg[:-2],
               "empty.jpg": b"", "pdf.png": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"}
    for name, data in damaged.items():
        (tmp_path / name).write_bytes(data)
    rows = [{"id": k, "modality": "image", "file": k} for k in (*damaged, "text.png")]
    got = {r["id"]: r["_error"] for r in ImageStage(ImageConfig())(_manifest(tmp_path, rows)).to_pylist()}
    assert got["png_end.png"].endswith("corrupt or truncated image: the PNG has no end chunk (IEND): the file was "
                                       "cut short")
    assert "corrupt or truncated image" in got["png_half.png"] and "corrupt or truncated" in got["jpg_end.jpg"]
    assert got["text.png"] == (f"{(tmp_path / 'text.png').resolve()}: not an image: Pillow knows no image format "
                               f"that starts with b'not an image'; expected a JPEG, PNG, WEBP, GIF, TIFF or BMP file")
    assert "not an image" in got["empty.jpg"] and "starts with b'%PDF-1.7" in got["pdf.png"]


def _wav_header(rate: int, bits: int, data_bytes: int) -> bytes:
    """A mono PCM WAV header (44 bytes) declaring `data_bytes` of samples."""
    import struct

    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, rate,
                       rate * bits // 8, bits // 8, bits, b"data", data_bytes)


def test_audio_length_comes_from_the_header_before_decoding_and_cut_clips_are_quarantined(tmp_path):
    import tracemalloc

    import soundfile as sf

    hour = tmp_path / "hour.wav"  # an hour of 16 kHz 16-bit silence, sparse on disk: decoded, 230 MB of float32
    with hour.open("wb") as fh:
        fh.write(_wav_header(16_000, 16, 3600 * 16_000 * 2))
        fh.truncate(44 + 3600 * 16_000 * 2)
    tracemalloc.start()
    with pytest.raises(ValueError, match=r"^3600 s long by its header, over ingest.audio.max_seconds = 600; split"):
        load_mono_16k(str(hour), max_seconds=600)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # no sample was read
    t = np.arange(22_050) / 22_050
    sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 22_050)
    wav = (tmp_path / "tone.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(wav[:-1])
    (tmp_path / "head.wav").write_bytes(wav[:40])
    sf.write(tmp_path / "nan.wav", np.full(1000, np.nan, np.float32), 16_000, subtype="FLOAT")
    rows = [{"id": k, "modality": "audio", "file": f"{k}.wav", "transcription": "a tone"}
            for k in ("tone", "hour", "cut", "head", "nan")]
    out = AudioStage(AudioConfig(), TokenizeConfig().tokenizer)(_manifest(tmp_path, rows))
    got = dict(zip(out["id"].to_pylist(), out["_error"].to_pylist()))
    assert got["tone"] is None and out["duration_s"].to_pylist()[0] == pytest.approx(1.0)
    assert got["hour"].endswith("3600 s long by its header, over ingest.audio.max_seconds = 600; split the clip")
    assert got["cut"].endswith("cut short: its header declares 44,100 bytes of samples, the file holds 44,099; "
                               "fetch or export it again")
    assert "undecodable audio" in got["head"]
    assert got["nan"].endswith("1,000 of 1,000 samples are NaN or infinite: the float data is corrupt")
    assert out["log_mel"].to_pylist()[1:] == [None] * 4


def test_a_cut_ljspeech_clip_is_quarantined_in_every_format(shared_data, tmp_path):
    wavs = shared_data / "speech_ljspeech_coqui_tests" / "ljspeech" / "wavs"
    for ext in ("wav", "flac", "mp3"):
        data = (wavs / f"LJ001-0001.{ext}").read_bytes()
        (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match="cut short|undecodable audio"):
            load_mono_16k(str(tmp_path / f"cut.{ext}"))


def test_a_pdf_cut_short_keeps_the_pages_read_and_says_the_rest_is_lost(tmp_path):
    data = _pdfs(tmp_path)["digital.pdf"].read_bytes()
    (tmp_path / "cut.pdf").write_bytes(data[: len(data) - 200])  # the xref table, trailer and %%EOF are gone
    (tmp_path / "eol.pdf").write_bytes(data[:-1])  # only the newline after %%EOF: nothing lost
    rows = [{"id": k, "modality": "pdf", "file": f"{k}.pdf"} for k in ("cut", "eol")]
    out = {r["id"]: r for r in PdfStage(PdfConfig(ocr_min_words=0, dpi=20))(_manifest(tmp_path, rows)).to_pylist()}
    assert out["cut"]["status"] == "quarantined" and out["cut"]["page"] is None
    assert out["cut"]["_error"].endswith(f"cut short: no %%EOF in the last 1,024 bytes of {len(data) - 200:,}; the "
                                         f"3 page(s) MuPDF's repair found are rows, anything after the cut is lost: "
                                         f"fetch the file again")
    assert [out[f"cut:p{n}"]["status"] for n in (1, 2, 3)] == ["kept", "kept", "empty_page"]
    assert sorted(k for k in out if k.startswith("eol")) == ["eol:p1", "eol:p2", "eol:p3"]
