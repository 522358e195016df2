"""PDF rows -> one row per page: PyMuPDF's text layer, a rendered PNG, and Tesseract OCR where the text layer is
missing or too thin.

A page whose text layer has fewer than `ocr_min_words` words is rendered at `ocr_dpi` and read by Tesseract
(pytesseract, languages `ocr_langs`); `ocr` says which pages. A page with fewer than `min_words` words even then
is kept with status `empty_page` (a drop reason). Encrypted, malformed and empty (zero-page) PDFs are
quarantined with the reason. Tesseract is the slow part (~1-3 s a page), so this stage runs in an actor pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ray_jobs import schema
from ray_jobs.ingest.manifest import FILE, PAGE, require_file
from ray_jobs.steps.base import Stage

OCR, IMAGE, NUM_PAGES = "ocr", "image", "num_pages"
EMPTY_PAGE = "empty_page"


@dataclass(frozen=True)
class PdfConfig:
    dpi: int = 96  # the rendered page kept with the row (96: 816 x 1056 for US letter, ~100-300 kB PNG)
    ocr_dpi: int = 300  # Tesseract's accuracy falls quickly below 300 dpi
    ocr_min_words: int = 20  # a text layer with fewer words is treated as missing: the page is OCR'd
    ocr_langs: tuple[str, ...] = ("eng",)  # Tesseract language packs (tesseract-ocr-<lang>)
    ocr_autorotate: bool = True  # detect pages scanned sideways or upside down (Tesseract OSD) and turn them
    min_words: int = 3  # fewer words after OCR: status empty_page
    render: bool = True  # keep the rendered page image
    max_pages: int = 10_000  # a longer PDF is quarantined whole (split it, or raise the limit)
    actors: int = 2
    actor_cpus: float = 0.5

    def __post_init__(self) -> None:
        if self.dpi < 10 or self.ocr_dpi < 50:
            raise ValueError(f"ingest.pdf.dpi must be >= 10 and ocr_dpi >= 50; got {self.dpi}, {self.ocr_dpi}")


def ocr_png(png: bytes, langs: tuple[str, ...], autorotate: bool = True) -> str:
    """Tesseract on a rendered page. With `autorotate`, Tesseract's orientation detection (OSD, ~0.5 s a page)
    first turns pages scanned sideways or upside down (on Tesseract's rotated test pages: CER 0.82 -> 0.0)."""
    import io
    import os

    import pytesseract
    from PIL import Image

    # One OpenMP thread per Tesseract: the actor pool already gives each core its own page, and Tesseract's
    # threads on top cost CPU for no throughput (Tesseract's own advice for parallel runs).
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    with Image.open(io.BytesIO(png)) as im:
        if autorotate:
            try:
                osd = pytesseract.image_to_osd(im, output_type=pytesseract.Output.DICT)
            except pytesseract.TesseractError:  # too little text to tell the orientation: read it as it is
                osd = {"rotate": 0}
            if osd["rotate"]:
                im = im.rotate(-osd["rotate"], expand=True)  # OSD's angle is clockwise, PIL's counter-clockwise
        return pytesseract.image_to_string(im, lang="+".join(langs))


def pdf_pages(path: str, only_page: int | None, cfg: PdfConfig) -> list[dict]:
    """Rows for the pages of one PDF; raises ValueError naming why the file cannot be read."""
    import pymupdf

    require_file(path)
    try:
        doc = pymupdf.open(path)
    except (pymupdf.FileDataError, RuntimeError, ValueError) as e:
        raise ValueError(f"malformed PDF: {e}") from e
    with doc:
        if doc.needs_pass:
            raise ValueError("encrypted PDF (needs a password); decrypt it first (qpdf --decrypt)")
        if doc.page_count == 0:
            raise ValueError("empty PDF: no pages")
        if doc.page_count > cfg.max_pages and not only_page:
            raise ValueError(f"{doc.page_count} pages, over ingest.pdf.max_pages = {cfg.max_pages}; split the "
                             f"PDF or raise the limit")
        numbers = [only_page - 1] if only_page else range(doc.page_count)
        if only_page and only_page > doc.page_count:
            raise ValueError(f"page {only_page} asked for, the PDF has {doc.page_count}")
        rows = []
        for n in numbers:
            page = doc[n]
            text = page.get_text("text")
            ocr = len(text.split()) < cfg.ocr_min_words
            if ocr:
                text = ocr_png(page.get_pixmap(dpi=cfg.ocr_dpi, colorspace=pymupdf.csGRAY).tobytes("png"),
                               cfg.ocr_langs, cfg.ocr_autorotate)
            image = page.get_pixmap(dpi=cfg.dpi).tobytes("png") if cfg.render else None
            rows.append({PAGE: n + 1, schema.TEXT: text.strip(), OCR: ocr, IMAGE: image,
                         NUM_PAGES: doc.page_count})
        return rows


class PdfStage(Stage):
    """PDF rows -> page rows (`id` = `<id>:p<page>`, `source`, `page`, `text`, `ocr`, `image`, `num_pages`, `status`).
    A PDF that cannot be read stays one row, quarantined."""

    stateful = True  # Tesseract and PyMuPDF in actors: OCR pages take seconds, the pool keeps both cores busy

    def __init__(self, cfg: PdfConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        out = []
        for row in table.to_pylist():
            base = {**row, OCR: None, IMAGE: None, NUM_PAGES: None, schema.TEXT: None, schema.STATUS: schema.KEPT}
            if row[schema.ERROR] is None:
                try:
                    pages = pdf_pages(row[FILE], row.get(PAGE), self.cfg)
                except ValueError as e:
                    base[schema.ERROR] = f"{row[FILE]}: {e}"
                else:
                    for p in pages:
                        status = EMPTY_PAGE if len(p[schema.TEXT].split()) < self.cfg.min_words else schema.KEPT
                        out.append({**base, **p, schema.ID: f"{row[schema.ID]}:p{p[PAGE]}", schema.STATUS: status})
                    continue
            base[schema.STATUS] = schema.QUARANTINED
            out.append(base)
        types = {PAGE: pa.int32(), OCR: pa.bool_(), IMAGE: pa.binary(), NUM_PAGES: pa.int32(),
                 schema.TEXT: pa.string(), schema.STATUS: pa.string()}
        names = list(dict.fromkeys([*table.column_names, *types]))
        return pa.table({c: pa.array([r.get(c) for r in out], types[c] if c in types else table.schema.field(c).type)
                         for c in names})
