"""Multimodal ingestion figures on the real files of ../shared/data, one core, the package's own functions.

    pip install rapidfuzz        # Levenshtein distance for the character error rate
    python benchmarks/multimodal_bench.py --json benchmarks/out/multimodal.json

* OCR: character error rate (Levenshtein distance / reference length, after folding whitespace) of
  `ray_jobs.ingest.pdf.pdf_pages` (Tesseract at ingest.pdf.ocr_dpi) on OCRmyPDF's scans of one page (linn.pdf and
  its skewed, rotated, CCITT and JBIG2 variants, all against linn.txt), and of Tesseract on the images of
  Tesseract's own test set (phototest, eurotext, rotated phototests) against their transcripts; OCR pages/s.
* Born-digital PDFs (pdfplumber's and dolma's test PDFs): pages/s of the text-layer path, the share of pages that
  fell back to OCR, words per page, and files quarantined (encrypted, malformed, empty) with their reasons.
* Audio: soxr (the package's resampler) against scipy's polyphase resampler (`resample_poly`, Kaiser window) on the
  LJSpeech clips, 22.05 kHz -> 16 kHz: the difference as a ratio to the signal (dB); clips/s and audio seconds per
  second for decode + resample + log-mel + Whisper features + transcript tokens.
* Images: images/s for read + validate (full decode) + hash on the COCO mini set, and with the WebDataset sample
  columns built too (decode + validate + pack; the tar write itself is Ray's `write_webdataset`).
CPU seconds (`time.process_time`) of this process; every figure is per core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"


def cer(got: str, ref: str) -> float:
    from rapidfuzz.distance import Levenshtein

    a, b = " ".join(got.split()), " ".join(ref.split())
    return Levenshtein.distance(a, b) / max(1, len(b))


def cpu_seconds() -> float:
    """This process and its finished children (Tesseract runs as a child process)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn, *args):
    t = cpu_seconds()
    out = fn(*args)
    return out, cpu_seconds() - t


def ocr_figures() -> dict:
    from PIL import Image

    from ray_jobs.ingest.pdf import PdfConfig, pdf_pages

    cfg = PdfConfig(render=False)
    scans = DATA / "pdfs" / "scanned_ocrmypdf"
    ref = (scans / "linn.txt").read_text()
    out: dict = {"pdf": {}, "images": {}}
    pages = seconds = 0.0
    for name in ("linn.pdf", "skew.pdf", "rotated_skew.pdf", "ccitt.pdf", "jbig2.pdf"):
        rows, s = timed(pdf_pages, str(scans / name), None, cfg)
        text = "\n".join(r["text"] for r in rows)
        out["pdf"][name] = {"cer": cer(text, ref), "pages": len(rows), "ocr": all(r["ocr"] for r in rows), "cpu_s": s}
        pages, seconds = pages + len(rows), seconds + s
    out["ocr_pages_per_s"] = pages / seconds
    tess = DATA / "ocr_images_tesseract" / "testing"
    for image, truth in (("phototest.tif", "phototest.txt"), ("eurotext.tif", "eurotext.txt"),
                         ("phototest-rotated-180.png", "phototest.txt"), ("phototest-rotated-L.png", "phototest.txt"),
                         ("phototest-rotated-R.png", "phototest.txt")):
        import io

        from ray_jobs.ingest.pdf import ocr_png

        with Image.open(tess / image) as im:
            buf = io.BytesIO()
            im.save(buf, "PNG")
        text, s = timed(ocr_png, buf.getvalue(), ("eng",))
        out["images"][image] = {"cer": cer(text, (tess / truth).read_text()), "cpu_s": s}
    return out


def born_digital_figures() -> dict:
    from ray_jobs.ingest.pdf import PdfConfig, pdf_pages

    cfg = PdfConfig(render=False)
    files = sorted((DATA / "pdfs" / "text_pdfplumber").glob("*.pdf")) + sorted((DATA / "pdfs" / "text_dolma").glob("*.pdf"))
    pages, ocr_pages, words, seconds, quarantined, text_seconds, text_pages = 0, 0, 0, 0.0, {}, 0.0, 0
    for f in files:
        try:
            rows, s = timed(pdf_pages, str(f), None, cfg)
        except ValueError as e:
            quarantined[f.name] = str(e)
            continue
        seconds += s
        pages += len(rows)
        ocr_pages += sum(r["ocr"] for r in rows)
        words += sum(len(r["text"].split()) for r in rows)
        if not any(r["ocr"] for r in rows):
            text_seconds, text_pages = text_seconds + s, text_pages + len(rows)
    return {"files": len(files), "pages": pages, "ocr_share": ocr_pages / max(1, pages),
            "words_per_page": words / max(1, pages), "text_layer_pages_per_s": text_pages / max(text_seconds, 1e-9),
            "all_pages_per_s": pages / max(seconds, 1e-9), "quarantined": quarantined}


def audio_figures() -> dict:
    import numpy as np
    import soundfile as sf
    from scipy.signal import filtfilt, firwin, resample_poly

    from ray_jobs.config import TokenizeConfig
    from ray_jobs.ingest.audio import AudioConfig, AudioStage, load_mono_16k
    from ray_jobs.ingest.manifest import read_manifest

    wavs = DATA / "speech_ljspeech_coqui_tests" / "ljspeech" / "wavs"
    errors, passband = [], []
    for f in sorted(wavs.glob("LJ001-000*.wav")):
        data, rate = sf.read(f, dtype="float32")
        ours = load_mono_16k(str(f))[0]
        ref = resample_poly(data.astype(np.float64), 320, 441)  # 22,050 * 320 / 441 = 16,000
        n = min(len(ours), len(ref))
        errors.append(10 * np.log10(np.sum((ours[:n] - ref[:n]) ** 2) / np.sum(ref[:n] ** 2)))
        low = firwin(501, 7000, fs=16_000)  # below 7 kHz: where both resamplers mean to be exact
        a, b = filtfilt(low, 1, ours[:n]), filtfilt(low, 1, ref[:n])
        passband.append(10 * np.log10(np.sum((a - b) ** 2) / np.sum(b ** 2)))
    meta = [line.split("|") for line in (wavs.parent / "metadata_flac.csv").read_text().splitlines()[1:]]
    lines = [{"id": Path(a).stem, "modality": "audio", "file": str(wavs.parent / a), "transcription": t}
             for a, t, *_ in meta]
    lines.append({"id": "jfk", "modality": "audio", "file": str(DATA / "speech_jfk_whisper" / "jfk.flac"),
                  "transcription": "And so my fellow Americans ask not what your country can do for you"})
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "multimodal_bench_audio.jsonl"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    stage = AudioStage(AudioConfig(), TokenizeConfig().tokenizer)
    stage.setup()
    table = read_manifest(tmp, (str(DATA.resolve()),))  # the clips stay in ../shared/data
    out, s = timed(stage, table)
    seconds = sum(d for d in out["duration_s"].to_pylist() if d)
    return {"resample_error_db_vs_resample_poly": float(np.mean(errors)),
            "resample_error_db_below_7khz": float(np.mean(passband)), "clips": len(table),
            "clips_per_s": len(table) / s, "audio_s_per_s": seconds / s,
            "quarantined": len(table) - out["_error"].null_count}


def image_figures() -> dict:
    from ray_jobs.ingest.images import ImageConfig, describe

    files = sorted((DATA / "coco_mini_captions" / "train2017").glob("*.jpg"))
    blobs = [f.read_bytes() for f in files]
    cfg = ImageConfig()
    _, s = timed(lambda: [describe(b, cfg) for b in blobs])
    _, s_verify = timed(lambda: [describe(b, ImageConfig(validate="verify")) for b in blobs])

    def decode_validate_pack():  # the ingest rows of these images, then their WebDataset columns
        import pyarrow as pa

        from ray_jobs.ingest.shards import asset_rows, webdataset_samples

        rows = [{"id": f.name, "modality": "image", "file": str(f), **describe(b, cfg)} for f, b in zip(files, blobs)]
        return webdataset_samples(asset_rows(pa.Table.from_pylist(rows)))

    packed, s_pack = timed(decode_validate_pack)
    return {"images": len(files), "mb": sum(map(len, blobs)) / 1e6, "images_per_s_decode": len(files) / s,
            "images_per_s_verify_only": len(files) / s_verify,
            "images_per_s_decode_validate_pack": len(files) / s_pack, "packed_samples": packed.num_rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this benchmark reads the shared third-party files")
    os.sched_setaffinity(0, {0})
    report = {"ocr": ocr_figures(), "born_digital": born_digital_figures(), "audio": audio_figures(),
              "images": image_figures()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
