"""The quality_model stage: a fastText classifier's probability of one label as a score column, and an optional
cut (`low_quality_score`), the way DCLM's and FineWeb-Edu-style fastText filters score web text.

fastText predicts one line at a time, so each text is cut to `max_chars` and its newlines become spaces in Arrow
before it becomes a Python string. A null text gets a null score and is never dropped for it; rows another step
already dropped or quarantined keep their status.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ray_jobs import schema
from ray_jobs.errors import UserError
from ray_jobs.steps.base import Stage
from ray_jobs.steps.quality_model.config import QualityModelConfig

LOW_QUALITY_SCORE = "low_quality_score"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")  # owner/repo, as the hub spells repo ids


def model_path(cfg: QualityModelConfig) -> Path:
    """The local model file: `model` itself, or `model_file` of the hub repo `model` (hf_hub_download's cache)."""
    p = Path(cfg.model).expanduser()
    if p.is_file():
        return p
    if p.exists() or not _HUB_ID.match(cfg.model):
        raise UserError(f"quality_model.model = {cfg.model!r} is not a model file (found "
                        f"{'a folder' if p.exists() else 'nothing there'}); give the path of a fastText .bin / "
                        ".ftz, or a hub repo id (owner/repo) with quality_model.model_file")
    if not cfg.model_file:
        raise UserError(f"quality_model.model = {cfg.model!r} is read as a hub repo id, but quality_model.model_file "
                        "is empty; name the .bin file in that repo, or give a local path")
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=cfg.model, filename=cfg.model_file))
    except Exception as e:  # noqa: BLE001 - no network, no such repo or file: re-raised with the fix
        raise UserError(f"quality_model: could not fetch {cfg.model_file!r} from the hub repo {cfg.model!r} "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); without network, "
                        "download it where there is and give its local path as quality_model.model") from e


def load_model(cfg: QualityModelConfig):
    import fasttext

    path = model_path(cfg)
    try:
        model = fasttext.load_model(str(path))
    except (ValueError, RuntimeError, MemoryError) as e:
        raise UserError(f"quality_model.model {path} is not a readable fastText model ({e}); give a .bin or .ftz "
                        "written by fastText's supervised training (train_supervised / `fasttext supervised`)") from e
    labels = model.get_labels()
    if cfg.label not in labels:
        raise UserError(f"quality_model.label {cfg.label!r} is not a label of {path}; its labels: "
                        f"{', '.join(labels[:20])}")
    return model


def model_input(text: pa.Array | pa.ChunkedArray, max_chars: int) -> pa.Array:
    """What the model reads: the first max_chars characters, newlines as spaces (fastText ends a line at \\n)."""
    return pc.replace_substring(pc.utf8_slice_codeunits(text, 0, max_chars), "\n", " ")


class QualityModelStage(Stage):
    stateful = True  # the model loads once per worker (DCLM's bigram model: ~1 GB)

    def __init__(self, cfg: QualityModelConfig) -> None:
        self.cfg = cfg
        self._model = None

    def setup(self) -> None:
        if not self.cfg.enabled:
            raise UserError("quality_model has no model: set quality_model.model to a fastText .bin path or a hub "
                            "repo id (with quality_model.model_file)")
        self._model = load_model(self.cfg)

    def scores(self, text: pa.Array | pa.ChunkedArray) -> pa.Array:
        """The probability of cfg.label for each text (float32), null for a null text."""
        if self._model is None:
            self.setup()
        label = self.cfg.label
        heads = model_input(text, self.cfg.max_chars).to_pylist()
        out = np.zeros(len(heads), np.float32)
        for i, head in enumerate(heads):
            if head is not None:
                labels, probs = self._model.predict(head, k=-1)  # every label: a binary model's "other" is not 1 - p
                out[i] = dict(zip(labels, probs)).get(label, 0.0)
        # fastText's softmax can come out a hair above 1 (seen on lid.176: 1.00004)
        return pa.array(np.clip(out, 0.0, 1.0), mask=np.fromiter((h is None for h in heads), bool, len(heads)))

    def __call__(self, table: pa.Table) -> pa.Table:
        score = self.scores(table[schema.TEXT])
        status = table[schema.STATUS] if schema.STATUS in table.column_names else schema.initial_status(table)
        if self.cfg.min_score > 0:
            low = pc.and_(pc.equal(status, schema.KEPT), pc.fill_null(pc.less(score, self.cfg.min_score), False))
            status = pc.if_else(low, LOW_QUALITY_SCORE, status)
        col = self.cfg.score_column
        if col in table.column_names:  # a re-score replaces the column, never two of one name
            table = table.drop_columns([col])
        return schema.set_status(table.append_column(col, score), status)
