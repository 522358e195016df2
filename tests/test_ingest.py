"""`ray-jobs ingest` on a real local Ray: a manifest of images, PDFs and audio -> rows per modality, bad files
quarantined, and the rows carried on through dedup and split like text."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.dataset as pads
import pytest
from test_multimodal import _images, _pdfs

from ray_jobs.cli import main as cli_main

pytestmark = pytest.mark.slow


def _rows(path):
    return pads.dataset(str(path), format="parquet", partitioning="hive").to_table().to_pylist()


@pytest.fixture(scope="module")
def ingested(ray_local, tmp_path_factory):
    import soundfile as sf

    root = tmp_path_factory.mktemp("assets")
    images, pdfs = _images(root), _pdfs(root)
    t = np.arange(22_050) / 22_050
    sf.write(root / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 22_050)
    lines = [{"id": k, "modality": "image", "file": k, "caption": f"a photo called {k}"} for k in images
             if k != "b.jpg"]
    lines.append({"id": "b.jpg", "modality": "image", "file": "b.jpg", "instruction": "What is shown?",
                  "response": "Random coloured noise."})  # a VLM instruction pair
    lines += [{"id": k, "modality": "pdf", "file": k} for k in pdfs]
    lines += [{"id": "tone", "modality": "audio", "file": "tone.wav", "transcription": "a tone"},
              {"id": "gone", "modality": "audio", "file": "missing.wav", "transcription": "no file"}]
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines) + "{broken\n")
    out = tmp_path_factory.mktemp("ingest_run")
    assert cli_main(["ingest", str(manifest), "--output", str(out), "--set", "ray.progress_bars=false",
                     "--set", "ingest.pdf.ocr_min_words=5", "--set", "ingest.image.max_pixels=50000000"]) == 0
    return out, len(lines) + 1


def test_every_manifest_line_lands_in_exactly_one_place(ingested):
    out, lines = ingested
    counts = json.loads((out / "ingest" / "_counts.json").read_text())
    # 3 good images, one of them the same bytes as another; truncated, bomb, text and the broken manifest line
    assert counts["image"] == {"exact_duplicate": 1, "kept": 2, "quarantined": 4}
    assert counts["audio"] == {"kept": 1, "quarantined": 1}
    assert counts["pdf"] == {"empty_page": 1, "kept": 3, "quarantined": 3}  # 2+1 pages; encrypted, broken, garbage
    images = {r["id"]: r for r in _rows(out / "ingest" / "image")}
    assert images["a.png"]["text"] == "a photo called a.png" and images["a.png"]["width"] == 400
    assert images["copy.png"]["status"] == "exact_duplicate" and images["copy.png"]["duplicate_of"] == "a.png"
    assert any(i.startswith("manifest.jsonl:") and "malformed JSON" in r["_error"] for i, r in images.items())
    pages = {r["id"]: r for r in _rows(out / "ingest" / "pdf")}
    assert pages["scanned.pdf:p1"]["ocr"] and "quick brown fox" in pages["scanned.pdf:p1"]["text"].lower()
    audio = {r["id"]: r for r in _rows(out / "ingest" / "audio")}
    assert audio["tone"]["duration_s"] == pytest.approx(1.0) and "file not found" in audio["gone"]["_error"]


def test_ingested_rows_go_through_dedup_and_split_like_text(ingested, tmp_path):
    out, _ = ingested
    run = tmp_path / "run"
    assert cli_main(["dedup", "--input", str(out / "ingest" / "image" / "status=kept"), "--output", str(run),
                     "--set", "ray.progress_bars=false"]) == 0
    kept = _rows(run / "dedup" / "status=kept")
    assert sorted(r["id"] for r in kept) == ["a.png", "b.jpg"]  # the image bytes travel along
    assert all(r["image"] and r["content_hash"] for r in kept)
    assert cli_main(["split", "--input", str(run / "dedup" / "status=kept"), "--output", str(run),
                     "--set", "ray.progress_bars=false"]) == 0
    assert sorted(r["id"] for r in _rows(run / "split")) == ["a.png", "b.jpg"]


def test_image_rows_run_into_vlm_token_rows_and_an_hf_export_with_lazy_images(ingested, tmp_path):
    """`ray-jobs run` on the ingest output: the image rows go through the chat template as VLM prompts (the
    instruction, else tokenize.image_prompt, after the image placeholder), labels on the answer only, the image
    bytes kept beside the tokens (pack off); the HF export gives the images as a lazily decoded Image() column."""
    import datasets

    from ray_jobs.config import TokenizeConfig
    from ray_jobs.steps.tokenize.tokenizer import load_tokenizer

    out, _ = ingested
    run = tmp_path / "vlm"
    sets = [f'input.paths=["{out / "ingest" / "image" / "status=kept"}"]', "ray.progress_bars=false",
            "clean.quality.enabled=[]", "clean.allowed_langs=[]", "dedup.method=off", "leakage.enabled=false",
            "pack.enabled=false",
            "output.export=hf",
            'tokenize.image_prompt="Caption this."']
    assert cli_main(["run", "--output", str(run), *[a for kv in sets for a in ("--set", kv)]]) == 0
    rows = {r["id"]: r for r in _rows(run / "tokenize")}
    assert sorted(rows) == ["a.png", "b.jpg"]
    tok = load_tokenizer(TokenizeConfig().tokenizer)

    def decoded(ids):
        return tok.decode([i for i in ids if i != -100], skip_special_tokens=False)

    assert "<|im_start|>user\n<image>\nWhat is shown?<|im_end|>" in decoded(rows["b.jpg"]["input_ids"])
    assert decoded(rows["b.jpg"]["labels"]) == "Random coloured noise.<|im_end|>"
    assert "<image>\nCaption this.<|im_end|>" in decoded(rows["a.png"]["input_ids"])
    assert decoded(rows["a.png"]["labels"]) == "a photo called a.png<|im_end|>"
    assert all(r["image"] and r["width"] == 400 for r in rows.values())
    hf = datasets.load_from_disk(str(run / "export" / "hf"))
    images = {r["id"]: r["image"] for split in hf.values() for r in split}
    assert sorted(images) == ["a.png", "b.jpg"] and all(im.size == (400, 300) for im in images.values())


def test_good_assets_beside_bad_ones_every_line_accounted_for(ray_local, tmp_path):
    """`ray-jobs ingest` over good assets mixed with damaged ones: a PDF page with a damaged content stream, a cut
    WAV and PNG, text bytes named .png, paths that leave the manifest's folder, a clip over the length limit, a
    page too large to OCR, a line of the wrong type and an id used twice: exit 0, the good rows as they are, each
    bad asset, page or line its own quarantine row with the reason."""
    from collections import Counter

    import pymupdf
    import soundfile as sf
    from test_multimodal import damage_page

    root = tmp_path / "assets"
    root.mkdir()
    images, pdfs = _images(root), _pdfs(root)
    t = np.arange(2 * 22_050) / 22_050
    sf.write(root / "tone.wav", 0.3 * np.sin(2 * math.pi * 440 * t[:22_050]), 22_050)
    sf.write(root / "long.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 22_050)  # 2 s, over the 1.5 s limit set below
    wav, png = (root / "tone.wav").read_bytes(), images["a.png"].read_bytes()
    (root / "cut.wav").write_bytes(wav[: len(wav) // 2])
    (root / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "outside.png").write_bytes(png)
    (root / "damaged.pdf").write_bytes(damage_page(pdfs["digital.pdf"].read_bytes(), 2, "zlib"))
    poster = pymupdf.open()
    poster.new_page(width=14_400, height=14_400)  # 200 x 200 in, blank: 3.6 G pixels to OCR at 300 dpi
    poster.save(root / "poster.pdf")
    lines = [{"id": k, "modality": "image", "file": f} for k, f in (
        ("a", "a.png"), ("cut_png", "cut.png"), ("text_png", "text.png"), ("up", "../outside.png"),
        ("abs", str(tmp_path / "outside.png")), ("dup", "a.png"), ("dup", "b.jpg"))]
    lines += [{"id": k, "modality": "pdf", "file": f"{k}.pdf"} for k in ("digital", "damaged", "poster")]
    lines += [{"id": k, "modality": "audio", "file": f"{k}.wav", "transcription": "a tone"}
              for k in ("tone", "cut", "long")]
    lines.append({"id": {"not": "an id"}, "modality": "image", "file": "a.png"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "run"
    assert cli_main(["ingest", str(manifest), "--output", str(out), "--set", "ray.progress_bars=false",
                     "--set", "ingest.pdf.ocr_min_words=5", "--set", "ingest.audio.max_seconds=1.5"]) == 0
    rows = {m: {r["id"]: r for r in _rows(out / "ingest" / m)} for m in ("image", "pdf", "audio")}
    assert Counter(r["status"] for r in rows["image"].values()) == {"kept": 1, "quarantined": 7}
    assert Counter(r["status"] for r in rows["pdf"].values()) == {"kept": 3, "empty_page": 2, "quarantined": 2}
    assert Counter(r["status"] for r in rows["audio"].values()) == {"kept": 1, "quarantined": 2}
    assert sum(len(r) for r in rows.values()) == len(lines) + 2 * 2  # 3 pages each for digital.pdf and damaged.pdf
    image = {k: r["_error"] for k, r in rows["image"].items()}
    assert image["a"] is None and "corrupt or truncated image" in image["cut_png"]
    assert "not an image" in image["text_png"] and "manifest.jsonl @ 14: id must be" in image["manifest.jsonl:14"]
    assert all(f"add {tmp_path.resolve()} to ingest.allowed_roots" in image[k] for k in ("up", "abs"))
    assert "id 'dup' is on lines 6, 7" in image["manifest.jsonl:6"] and "lines 6, 7" in image["manifest.jsonl:7"]
    pdf = rows["pdf"]
    assert [pdf[f"damaged:p{n}"]["status"] for n in (1, 2, 3)] == ["kept", "quarantined", "empty_page"]
    assert pdf["damaged:p1"]["text"] == pdf["digital:p1"]["text"] and "page 2: MuPDF" in pdf["damaged:p2"]["_error"]
    assert "over ingest.pdf.max_page_pixels" in pdf["poster:p1"]["_error"]
    audio = {k: r["_error"] for k, r in rows["audio"].items()}
    assert audio["tone"] is None and "cut short" in audio["cut"] and "over ingest.audio.max_seconds" in audio["long"]
