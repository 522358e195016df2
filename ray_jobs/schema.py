"""The canonical row schema every reader produces and every stage keeps.

A row is `id` (stable, unique string), `text`, `source`, plus whatever other columns the input had. Two
bookkeeping columns travel with it: `status` says what a stage decided (`kept`, a drop reason such as
`too_short`, or `quarantined`), `_offset` says where in its file the row came from (line number, row number
or tar member index) so a quarantine entry can be found again. `_error` carries the reader's message for
quarantined rows and is null otherwise.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

ID = "id"
TEXT = "text"
SOURCE = "source"
STATUS = "status"
OFFSET = "_offset"
ERROR = "_error"
# On the last row a file gives: how many rows (read and quarantined) the reader gave for that file; null on every
# other row. rundir/stats.py sums it into the first step's rows_in, a count made before any step ran, so a row lost
# between the reader and the written folders breaks `rows_in == rows_out + dropped + quarantined`.
RECORDS = "_records"

KEPT = "kept"
QUARANTINED = "quarantined"

# Split stage: rows are never dropped there, they are routed; the folder partition column is `split`.
SPLIT = "split"
SPLITS = ("train", "val", "test")

# Chat rows: the conversation as JSON ([{"role": ..., "content": ...}]), next to a `text` made of its contents.
MESSAGES = "messages"

# Token rows padded to a fixed length (tokenize.padding = "max_length"): 1 on tokens, 0 on padding.
ATTENTION_MASK = "attention_mask"

CORE_FIELDS = (
    pa.field(ID, pa.string(), nullable=False),
    pa.field(TEXT, pa.string()),
    pa.field(SOURCE, pa.string()),
)
BOOKKEEPING_FIELDS = (
    pa.field(OFFSET, pa.int64()),
    pa.field(ERROR, pa.string()),
    pa.field(STATUS, pa.string()),
)
RESERVED = {f.name for f in CORE_FIELDS + BOOKKEEPING_FIELDS} | {RECORDS}
# Columns of the run's own accounting, left out of what exports and asset shards give to users.
BOOKKEEPING = {OFFSET, ERROR, STATUS, RECORDS}


def initial_status(table: pa.Table) -> pa.Array:
    """`quarantined` where the reader left an `_error`, `kept` elsewhere: the status a first stage starts from."""
    if ERROR not in table.column_names:
        return pa.array([KEPT] * len(table), pa.string())
    return pc.if_else(pc.is_valid(table[ERROR]), QUARANTINED, KEPT)


def set_status(table: pa.Table, status: pa.Array) -> pa.Table:
    """Replace (or add) the `status` column."""
    if STATUS in table.column_names:
        return table.set_column(table.schema.get_field_index(STATUS), STATUS, status)
    return table.append_column(STATUS, status)
