"""Images, PDFs (PyMuPDF + real Tesseract) and audio (libsndfile + soxr) on real files: files made here with the
real libraries, and the third-party ones in ../shared/data when present."""

from __future__ import annotations

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


def _manifest(tmp_path: Path, rows: list[dict]) -> pa.Table:
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return read_manifest(path)


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
    assert "not a readable image" in got["text.png"]["_error"]
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
    table = _manifest(tmp_path, [{"id": "linn", "modality": "pdf", "file": str(folder / "linn.pdf")}])
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
