"""Packing: document boundaries, position ids, labels at boundaries, padding and cropping accounting."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ray_jobs.steps.pack.ops import best_fit_decreasing, pack, pack_split_rows
from ray_jobs.steps.tokenize.chat import IGNORE


def _docs(lengths, seed=0):
    """Token t of document d is d * 2000 + t, so every packed token says where it came from."""
    rng = np.random.default_rng(seed)
    ids = [(d * 2000 + np.arange(n)).astype(np.int32).tolist() for d, n in enumerate(lengths)]
    labels = [[IGNORE if rng.random() < 0.3 else t for t in d] for d in ids]  # e.g. chat masks
    return pa.array(ids, pa.list_(pa.int32())), pa.array(labels, pa.list_(pa.int32())), ids, labels


def _unpack(table):
    """Per packed row, its documents' (input ids, labels, positions) cut at seq_lens."""
    out = []
    for r in table.to_pylist():
        at = 0
        for n in r["seq_lens"]:
            out.append((r["input_ids"][at:at + n], r["labels"][at:at + n], r["position_ids"][at:at + n]))
            at += n
        assert all(lab == IGNORE for lab in r["labels"][at:])  # padding is never trained
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_mode_keeps_every_token_in_order_with_boundaries(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, 400)
    lengths[:5] = [1000, 257, 256, 255, 1]  # longer than a row, exactly a row, around it
    ids, labels, raw_ids, raw_labels = _docs(lengths, seed)
    table, stats = pack(ids, labels, 256, pad_id=0)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32(), 256)
    pieces = _unpack(table)
    by_doc: dict[int, list] = {}
    for piece_ids, piece_labels, pos in pieces:
        assert pos == list(range(len(pos)))  # positions restart at every document piece
        assert piece_labels[0] == IGNORE  # no prediction across a boundary
        doc, first = divmod(piece_ids[0], 2000)
        assert piece_ids == list(range(piece_ids[0], piece_ids[0] + len(piece_ids)))  # one document, in order
        assert piece_labels[1:] == raw_labels[doc][first + 1:first + len(piece_ids)]
        by_doc.setdefault(doc, []).append(piece_ids)
    # every document comes back whole, long ones as seq_len pieces (1000 -> 256, 256, 256, 232)
    assert {d: sorted(t for p in ps for t in p) for d, ps in by_doc.items()} == dict(enumerate(raw_ids))
    assert sorted(len(p) for p in by_doc[0]) == [232, 256, 256, 256]
    assert stats.tokens == int(lengths.sum()) and stats.cropped == 0
    assert stats.padding == table.num_rows * 256 - stats.tokens
    for r in table.to_pylist():  # cu_seqlens: what flash_attn_varlen_func takes for the row
        assert r["cu_seqlens"] == [0, *np.cumsum(r["seq_lens"]).tolist()]
    # best-fit decreasing: little padding on a broad length mix, far less than first-come (next-fit) packing
    next_fit, free = 0, 0
    for n in (min(256, n - k) for n in lengths.tolist() for k in range(0, n, 256)):
        if n > free:
            next_fit, free = next_fit + 1, 256
        free -= n
    assert stats.as_dict()["packing_efficiency"] > 0.95
    assert stats.padding < 0.5 * (next_fit * 256 - stats.tokens)


def test_crop_mode_counts_what_it_cuts():
    ids, labels, raw, _ = _docs([600, 100, 30])
    table, stats = pack(ids, labels, 256, pad_id=7, overflow="crop")
    assert stats.cropped == 600 - 256 and stats.tokens == 256 + 100 + 30
    pieces = _unpack(table)
    assert sorted(len(p[0]) for p in pieces) == [30, 100, 256]
    assert [p[0] for p in pieces if len(p[0]) == 256] == [raw[0][:256]]
    assert 7 in table["input_ids"].to_pylist()[-1]  # padding id


def test_best_fit_decreasing_never_overfills():
    sizes = np.random.default_rng(3).integers(1, 100, 2000)
    row, offset, rows = best_fit_decreasing(sizes, 100)
    fill = np.bincount(row, weights=sizes, minlength=rows)
    assert fill.max() <= 100 and rows <= np.ceil(sizes.sum() / 100) * 1.05
    for r in range(rows):  # items of a row do not overlap
        items = sorted(zip(offset[row == r], sizes[row == r]))
        assert all(a + s <= b for (a, s), (b, _) in zip(items, items[1:]))


def test_packs_each_split_apart_and_skips_rows_without_tokens():
    ids, labels, _, _ = _docs([10, 20, 0, 30])
    table = pa.table({"split": ["train", "val", "train", "train"], "input_ids": ids, "labels": labels,
                      "num_tokens": [10, 20, 0, 30]})
    out = pack_split_rows(64, 0, "split")(table)
    assert sorted(out["split"].to_pylist()) == ["train", "val"]
    assert {s: sorted(r) for s, r in zip(out["split"].to_pylist(), out["seq_lens"].to_pylist())} == \
        {"train": [10, 30], "val": [20]}
