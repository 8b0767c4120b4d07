"""Postgres's binary COPY format, written from Arrow columns without Python per row.

A step's per-prompt rows reach Postgres as ``COPY ... FROM STDIN (FORMAT binary)``: the server
reads each value as it is stored, instead of parsing CSV text: 5% to 27% more rows a second
into the decision table in every pair measured (bench/copy_ceiling.py, docs/telemetry_scale.md).
Each row is made by Arrow's C kernels: every field's 4-byte length and its bytes joined
element-wise.

The layout (https://www.postgresql.org/docs/15/sql-copy.html, "Binary Format"): a header, then
per row a 16-bit field count and per field a 32-bit length (-1: NULL) and the value in the
type's binary send format (big-endian integers and floats, a boolean's byte, text's UTF-8
bytes, jsonb's version byte 1 before its text), then a 16-bit -1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")  # signature, flags, no extension
TRAILER = (-1).to_bytes(2, "big", signed=True)
BATCH_ROWS = 65_536  # rows encoded into one chunk (Arrow's 32-bit offsets bound a chunk's bytes to 2 GiB)

# Postgres type (format_type's name) -> the big-endian numpy type of its binary form; text-like
# types are sent as their UTF-8 bytes.
FIXED = {"bigint": ">i8", "integer": ">i4", "smallint": ">i2", "double precision": ">f8", "real": ">f4",
         "boolean": "u1"}
TEXT = ("text", "character varying", "json", "jsonb")
_EMPTY = pa.scalar(b"", pa.binary())


class CopyTypeError(TypeError):
    """A column whose Postgres type this encoder does not write."""


def supported(pg_type: str) -> bool:
    return pg_type in FIXED or pg_type.split("(")[0] in TEXT


def _binary(values: np.ndarray, width: int) -> pa.Array:
    """Equal-width byte strings (numpy values in their binary form) as an Arrow binary array."""
    raw = pa.Array.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(np.ascontiguousarray(values))])
    return pc.cast(raw, pa.binary())


def _fixed(column: pa.Array, pg_type: str, name: str) -> pa.Array:
    """A numeric or boolean column's values in their binary form (NULLs as 0: their length says -1)."""
    kind = np.dtype(FIXED[pg_type])
    if pa.types.is_boolean(column.type):
        values = np.asarray(column.fill_null(False), dtype=bool).astype(kind)
    elif pa.types.is_floating(column.type) and kind.kind == "i":  # numpy would truncate 2.5 to 2 unsaid
        raise CopyTypeError(f"column {name}: Arrow {column.type} cannot be sent as {pg_type} (its fraction)")
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        if kind.kind == "i" and len(column) and column.null_count < len(column):
            # numpy would wrap an integer too large for the column; CSV text got Postgres's error
            low, high = pc.min_max(column).values()
            bounds = np.iinfo(kind)
            if low.as_py() < bounds.min or high.as_py() > bounds.max:
                raise OverflowError(f"column {name}: a value in [{low}, {high}] is out of range for type {pg_type}")
        values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(kind)
    else:
        raise CopyTypeError(f"column {name}: Arrow {column.type} cannot be sent as {pg_type}")
    return _binary(values, kind.itemsize)


def _rows(batch: pa.RecordBatch, pg_types: Sequence[str]) -> pa.Array:
    """Each row of ``batch`` as its bytes in the binary format (one binary value per row)."""
    rows = batch.num_rows
    pieces: list[pa.Array | pa.Scalar] = [pa.scalar(len(pg_types).to_bytes(2, "big"), pa.binary())]
    for name, column, pg_type in zip(batch.schema.names, batch.columns, pg_types, strict=True):
        base = pg_type.split("(")[0]
        if pg_type in FIXED:
            data = _fixed(column, pg_type, name)
            lengths = np.full(rows, np.dtype(FIXED[pg_type]).itemsize, dtype=np.int64)
        elif base in TEXT:
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise CopyTypeError(f"column {name}: Arrow {column.type} cannot be sent as {pg_type}")
            data = pc.cast(column.fill_null(""), pa.binary())
            lengths = pc.binary_length(data).to_numpy(zero_copy_only=False).astype(np.int64)
            if base == "jsonb":  # jsonb's binary form: a version byte, then the text
                data = pc.binary_join_element_wise(pa.scalar(b"\x01", pa.binary()), data, _EMPTY)
                lengths += 1
        else:
            raise CopyTypeError(f"column {name}: Postgres type {pg_type} is not written by binary COPY here")
        if column.null_count:
            valid = np.asarray(column.is_valid())
            lengths = np.where(valid, lengths, -1)
            data = pc.if_else(pa.array(valid), data, _EMPTY)
        pieces += [_binary(lengths.astype(">i4"), 4), data]
    return pc.binary_join_element_wise(*pieces, _EMPTY)


def binary_copy_chunks(table: pa.Table, pg_types: Sequence[str]) -> Iterator[memoryview]:
    """``table``'s rows as binary COPY data, in chunks of at most ``BATCH_ROWS`` rows: the header
    with the first, the trailer last. ``pg_types`` are the target columns' types, in order."""
    yield memoryview(HEADER)
    for batch in table.to_batches(max_chunksize=BATCH_ROWS):
        if not batch.num_rows:
            continue
        rows = _rows(batch, pg_types)
        offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32, count=len(rows) + 1, offset=rows.offset * 4)
        yield memoryview(rows.buffers()[2])[offsets[0]:offsets[-1]]
    yield memoryview(TRAILER)
