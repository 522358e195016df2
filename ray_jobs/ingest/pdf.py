"""PDF rows -> one row per page: PyMuPDF's text layer, a rendered PNG, and Tesseract OCR where the text layer is
missing or too thin.

A page whose text layer has fewer than `ocr_min_words` words is rendered at `ocr_dpi` and read by Tesseract
(pytesseract, languages `ocr_langs`); `ocr` says which pages. A page with fewer than `min_words` words even then
is kept with status `empty_page` (a drop reason). Encrypted, malformed and empty (zero-page) PDFs are
quarantined with the reason. Tesseract is the slow part (~1-3 s a page), so this stage runs in an actor pool.

A page that cannot be read is its own quarantine row (`<id>:p<page>`, the page, the reason) and the other pages
are still rows: MuPDF's errors, Tesseract's, a page over `max_page_pixels` or `ocr_timeout_s`, and a page on
which MuPDF reported damage. MuPDF reads a damaged content stream (bad deflate data, a syntax error, a missing
object) without an exception and gives a blank or partial page, so its warnings are the signal: on the 36 real
PDFs in ../shared/data (~260 pages) no page gave one. A file cut short (no `%%EOF` near its end: an interrupted
download) keeps the pages MuPDF's repair finds, plus one quarantine row for the file saying the rest is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.ingest.manifest import FILE, PAGE, require_file
from ray_jobs.steps.base import Stage

OCR, IMAGE, NUM_PAGES = "ocr", "image", "num_pages"
EMPTY_PAGE = "empty_page"
TAIL = 1024  # bytes at the end of a file where `%%EOF` must be: the spec puts it last, writers append little after


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
    # Pixels of one render, from the page's size before rendering. A page to OCR over it is quarantined: Tesseract
    # at a lower dpi would give worse text silently. The kept image is rendered at the largest dpi that fits (it is
    # a preview). 100 M = A1 at 300 dpi (70 M) passes, A0 (139 M) does not; PDF pages go up to 200 x 200 in, 3.6 G
    # pixels at 300 dpi, and a UserUnit can scale that further. Cost of a page at the limit: Tesseract's process
    # holds ~5 bytes a pixel (176 MB peak on a 34.8 M-pixel page here), ~500 MB, and the actor ~2 bytes a pixel
    # (the gray pixmap and its decoded copy), ~200 MB.
    max_page_pixels: int = 100_000_000
    # Tesseract's seconds for one page (orientation + text), then it is stopped and the page quarantined. A page
    # takes ~1-3 s here; 60 s is 20x that: a page that needs more is most likely not text (a dense map, noise).
    # 0 = no limit.
    ocr_timeout_s: float = 60.0
    actors: int = 2
    actor_cpus: float = 0.5

    def __post_init__(self) -> None:
        if self.dpi < 10 or self.ocr_dpi < 50:
            raise UserError(f"ingest.pdf.dpi must be >= 10 and ocr_dpi >= 50; got {self.dpi}, {self.ocr_dpi}")
        if self.max_page_pixels < 1 or self.ocr_timeout_s < 0:
            raise UserError(f"ingest.pdf.max_page_pixels must be >= 1 and ocr_timeout_s >= 0 (0 = no limit); got "
                            f"{self.max_page_pixels}, {self.ocr_timeout_s}")


def ocr_png(png: bytes, langs: tuple[str, ...], autorotate: bool = True, timeout_s: float = 0.0) -> str:
    """Tesseract on a rendered page. With `autorotate`, Tesseract's orientation detection (OSD, ~0.5 s a page)
    first turns pages scanned sideways or upside down (on Tesseract's rotated test pages: CER 0.82 -> 0.0).
    `timeout_s` (0 = none) bounds both calls together; ValueError when Tesseract fails or runs over it."""
    import io
    import os
    import time

    import pytesseract
    from PIL import Image

    # One OpenMP thread per Tesseract: the actor pool already gives each core its own page, and Tesseract's
    # threads on top cost CPU for no throughput (Tesseract's own advice for parallel runs).
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    deadline = time.monotonic() + timeout_s

    def left() -> float:  # pytesseract's timeout, where 0 means none: a spent budget still times out at once
        return max(deadline - time.monotonic(), 1e-3) if timeout_s else 0

    try:
        with Image.open(io.BytesIO(png)) as im:
            if autorotate:
                try:
                    osd = pytesseract.image_to_osd(im, output_type=pytesseract.Output.DICT, timeout=left())
                except pytesseract.TesseractError:  # too little text to tell the orientation: read it as it is
                    osd = {"rotate": 0}
                if osd["rotate"]:
                    im = im.rotate(-osd["rotate"], expand=True)  # OSD's angle is clockwise, PIL's counter-clockwise
            return pytesseract.image_to_string(im, lang="+".join(langs), timeout=left())
    except pytesseract.TesseractError as e:
        raise ValueError(f"Tesseract failed: {e.message.strip() or e}") from e
    except RuntimeError as e:
        if "timeout" not in str(e):
            raise
        raise ValueError(f"Tesseract ran over ingest.pdf.ocr_timeout_s = {timeout_s:g} s and was stopped; raise the "
                         f"limit if pages this dense are wanted") from e


def render_pixels(width: float, height: float, dpi: float) -> int:
    """Pixels of a page of width x height points rendered at `dpi` (72 points an inch)."""
    return int(width * height * (dpi / 72) ** 2)


def fit_zoom(width: float, height: float, max_pixels: int) -> float:
    """The largest scale (pixels a point) at which MuPDF's pixmap of the page, each side rounded up, stays within
    `max_pixels`: z solves (w z + 1)(h z + 1) = max_pixels."""
    a, b, c = width * height, width + height, 1 - max_pixels
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


def read_page(page, cfg: PdfConfig) -> dict:
    """text, ocr flag and image of one page; ValueError naming why the page cannot be read."""
    import pymupdf

    def damage() -> None:  # what MuPDF reported since the last call, as an error
        if said := pymupdf.TOOLS.mupdf_warnings(reset=True):
            raise ValueError(f"MuPDF reported damage while reading the page ({'; '.join(said.splitlines()[:3])}): "
                             f"it would come out blank or partial; re-export the PDF from its source")

    text = page.get_text("text")
    damage()
    ocr = len(text.split()) < cfg.ocr_min_words
    w, h = page.rect.width, page.rect.height
    if ocr:
        pixels = render_pixels(w, h, cfg.ocr_dpi)
        if pixels > cfg.max_page_pixels:
            raise ValueError(f"the page is {w:.0f} x {h:.0f} pt with no text layer to read; OCR at {cfg.ocr_dpi} dpi "
                             f"would render {pixels:,} pixels, over ingest.pdf.max_page_pixels = "
                             f"{cfg.max_page_pixels:,}; raise the limit (Tesseract holds ~5 bytes a pixel) or lower "
                             f"ingest.pdf.ocr_dpi")
        png = page.get_pixmap(dpi=cfg.ocr_dpi, colorspace=pymupdf.csGRAY).tobytes("png")
        damage()
        text = ocr_png(png, cfg.ocr_langs, cfg.ocr_autorotate, cfg.ocr_timeout_s)
    image = None
    if cfg.render:
        if render_pixels(w, h, cfg.dpi) <= cfg.max_page_pixels:
            pix = page.get_pixmap(dpi=cfg.dpi)
        else:  # the preview at the largest scale that fits (get_pixmap's dpi takes whole numbers only)
            zoom = fit_zoom(w, h, cfg.max_page_pixels)
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom))
        image = pix.tobytes("png")
        damage()
    return {schema.TEXT: text.strip(), OCR: ocr, IMAGE: image}


def pdf_pages(path: str, only_page: int | None, cfg: PdfConfig) -> list[dict]:
    """Rows for the pages of one PDF, each with `_error` None or why that page cannot be read (and one row with
    no page for a file cut short); raises ValueError naming why the file cannot be read at all."""
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
            pymupdf.TOOLS.mupdf_warnings(reset=True)  # what opening said (a repaired xref) is not this page's
            row = {PAGE: n + 1, NUM_PAGES: doc.page_count, schema.TEXT: None, OCR: None, IMAGE: None,
                   schema.ERROR: None}
            try:
                row.update(read_page(doc[n], cfg))
            except pymupdf.mupdf.FzErrorBase as e:  # MuPDF's own errors are not RuntimeErrors
                row[schema.ERROR] = f"page {n + 1}: MuPDF could not read the page: {e}"
            except ValueError as e:
                row[schema.ERROR] = f"page {n + 1}: {e}"
            rows.append(row)
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - TAIL))
            if b"%%EOF" not in fh.read():
                rows.append({PAGE: None, NUM_PAGES: doc.page_count, schema.TEXT: None, OCR: None, IMAGE: None,
                             schema.ERROR: f"cut short: no %%EOF in the last {TAIL:,} bytes of {size:,}; the "
                                           f"{len(rows)} page(s) MuPDF's repair found are rows, anything after the "
                                           f"cut is lost: fetch the file again"})
        return rows


class PdfStage(Stage):
    """PDF rows -> page rows (`id` = `<id>:p<page>`, `source`, `page`, `text`, `ocr`, `image`, `num_pages`, `status`).
    A PDF that cannot be read stays one row, quarantined; so does a page that cannot be read (`<id>:p<page>`) and
    the lost tail of a file cut short (`<id>`)."""

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
                        if p[schema.ERROR]:
                            status, p[schema.ERROR] = schema.QUARANTINED, f"{row[FILE]}: {p[schema.ERROR]}"
                        else:
                            status = EMPTY_PAGE if len(p[schema.TEXT].split()) < self.cfg.min_words else schema.KEPT
                        rid = row[schema.ID] if p[PAGE] is None else f"{row[schema.ID]}:p{p[PAGE]}"
                        out.append({**base, **p, schema.ID: rid, schema.STATUS: status})
                    continue
            base[schema.STATUS] = schema.QUARANTINED
            out.append(base)
        types = {PAGE: pa.int32(), OCR: pa.bool_(), IMAGE: pa.binary(), NUM_PAGES: pa.int32(),
                 schema.TEXT: pa.string(), schema.STATUS: pa.string()}
        names = list(dict.fromkeys([*table.column_names, *types]))
        return pa.table({c: pa.array([r.get(c) for r in out], types[c] if c in types else table.schema.field(c).type)
                         for c in names})
