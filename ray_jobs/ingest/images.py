"""Image rows: read, validate, describe, hash, optionally resize; bad files quarantined with the reason.

Decoding is lazy: Pillow reads the header for width/height/format and `verify()` walks the file's structure;
pixels are decoded once to validate (`validate = "decode"`: the only way to see a JPEG cut short, which verify()
passes) and to resize or hash, and never kept: the row carries the file's bytes. A file over `max_pixels` is
refused before any decoding (a decompression bomb: a few kB of PNG that inflate to gigabytes).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import pyarrow as pa
import xxhash
from PIL import Image, UnidentifiedImageError

from ray_jobs import schema
from ray_jobs.ingest.manifest import FILE, require_file
from ray_jobs.steps.base import Stage

IMAGE, WIDTH, HEIGHT, FORMAT, CONTENT_HASH, PHASH = "image", "width", "height", "format", "content_hash", "phash"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and its CRC, the same in every PNG


@dataclass(frozen=True)
class ImageConfig:
    max_pixels: int = 89_478_485  # Pillow's own bomb limit (0.25 GB of RGBA); larger is refused, not decoded
    resize_max_side: int = 0  # 0 = keep the bytes as they are; else downscale so the longer side fits
    resize_format: str = "JPEG"  # the format resized images are written in
    perceptual_hash: bool = False  # pHash (imagehash) for near-duplicate images
    validate: str = "decode"  # "decode": full decode, catches truncated files; "verify": structure only, faster

    def __post_init__(self) -> None:
        if self.validate not in ("decode", "verify"):
            raise ValueError(f"ingest.image.validate must be decode or verify; got {self.validate!r}")
        if self.resize_format not in ("JPEG", "PNG", "WEBP"):
            raise ValueError(f"ingest.image.resize_format must be JPEG, PNG or WEBP; got {self.resize_format!r}")


def describe(data: bytes, cfg: ImageConfig) -> dict:
    """width, height, format, content hash, optional pHash, and the bytes to keep; raises ValueError naming
    what is wrong with the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h, fmt = im.width, im.height, im.format
                if w * h > cfg.max_pixels:
                    raise ValueError(f"decompression bomb: {w} x {h} = {w * h:,} pixels, over the limit of "
                                     f"{cfg.max_pixels:,} (ingest.image.max_pixels)")
                im.verify()  # structure and checksums without decoding: catches truncated and corrupt files
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # Pillow's own limit, at open
        raise ValueError(f"decompression bomb: {e} (ingest.image.max_pixels = {cfg.max_pixels:,})") from e
    except UnidentifiedImageError as e:  # its message names a BytesIO's address: the reason says what was found
        raise ValueError(f"not an image: Pillow knows no image format that starts with {data[:12]!r}; expected a "
                         f"JPEG, PNG, WEBP, GIF, TIFF or BMP file") from e
    except (OSError, SyntaxError) as e:  # Pillow reports truncation and bad chunks as these
        raise ValueError(f"corrupt or truncated image: {e}") from e
    if fmt == "PNG" and data.rfind(PNG_END) < 0:  # Pillow reads a PNG cut inside its last chunk without a word
        raise ValueError("corrupt or truncated image: the PNG has no end chunk (IEND): the file was cut short")
    out = {WIDTH: w, HEIGHT: h, FORMAT: fmt, CONTENT_HASH: xxhash.xxh3_128_hexdigest(data), IMAGE: data,
           PHASH: None}
    if cfg.validate == "decode" or cfg.perceptual_hash or (cfg.resize_max_side and max(w, h) > cfg.resize_max_side):
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # the first full decode: truncation that verify() cannot see fails here
                if cfg.perceptual_hash:
                    import imagehash

                    out[PHASH] = str(imagehash.phash(im))
                if cfg.resize_max_side and max(w, h) > cfg.resize_max_side:
                    im.thumbnail((cfg.resize_max_side, cfg.resize_max_side), Image.Resampling.LANCZOS)
                    buf = io.BytesIO()
                    (im.convert("RGB") if cfg.resize_format == "JPEG" else im).save(buf, cfg.resize_format)
                    out.update({IMAGE: buf.getvalue(), WIDTH: im.width, HEIGHT: im.height, FORMAT: cfg.resize_format})
        except OSError as e:
            raise ValueError(f"corrupt or truncated image: {e}") from e
    return out


class ImageStage(Stage):
    """Image rows (file path) -> image bytes, width, height, format, content_hash[, phash]; a file that cannot be
    read or validated keeps its row, quarantined, with the reason in `_error`."""

    def __init__(self, cfg: ImageConfig) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        cols: dict[str, list] = {k: [] for k in (IMAGE, WIDTH, HEIGHT, FORMAT, CONTENT_HASH, PHASH)}
        errors = table[schema.ERROR].to_pylist()
        for i, path in enumerate(table[FILE].to_pylist()):
            info = {k: None for k in cols}
            if errors[i] is None:
                try:
                    require_file(path)
                    with open(path, "rb") as fh:
                        info = describe(fh.read(), self.cfg)
                except (OSError, ValueError) as e:
                    errors[i] = f"{path}: {e}"
            for k in cols:
                cols[k].append(info[k])
        types = {IMAGE: pa.binary(), WIDTH: pa.int32(), HEIGHT: pa.int32(), FORMAT: pa.string(),
                 CONTENT_HASH: pa.string(), PHASH: pa.string()}
        out = table.set_column(table.schema.get_field_index(schema.ERROR), schema.ERROR, pa.array(errors, pa.string()))
        for k, v in cols.items():
            out = out.append_column(k, pa.array(v, types[k]))
        return out
