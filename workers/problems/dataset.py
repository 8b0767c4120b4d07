"""Prompt datasets from local files in verl's format: JSONL, Parquet and CSV.

A row carries `prompt` (text or a chat list of {role, content}), the answer in
`reward_model.ground_truth` (verl) or a top-level `ground_truth`/`answer`, `data_source`
and `extra_info.index`. The stable key is an explicit `key`, else `data_source:index`.

Reading is all or nothing: either every row becomes a PromptRecord, or DatasetError
lists what is wrong, row by row (up to MAX_ERRORS). `row` is the line for JSONL and the
data row (header not counted) for CSV and Parquet; row 0 means the whole file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MAX_ERRORS = 100
_SHOWN_ERRORS = 5  # how many errors str(DatasetError) spells out

_Bad = Callable[[str, str], None]  # reports (field, message) for the current row


@dataclass(frozen=True)
class PromptRecord:
    """One prompt with its answer; `key` is unique within a dataset and stable across reads.

    `index` is -1 when the row gave an explicit key and no index.
    """

    key: str
    prompt: str | list[dict[str, str]]
    ground_truth: str
    data_source: str
    index: int
    difficulty: str = ""
    split: str = ""
    extra_info: dict[str, Any] = field(default_factory=dict)


class DatasetError(ValueError):
    """A dataset file that cannot be used; `errors` holds {row, field, message} dicts."""

    def __init__(self, errors: list[dict[str, Any]], filename: str = "") -> None:
        self.errors = errors
        self.filename = filename
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = []
        for e in self.errors[:_SHOWN_ERRORS]:
            where = f"row {e['row']}, field {e['field']}" if e["row"] else e["field"]
            parts.append(f"{where}: {e['message']}")
        more = len(self.errors) - _SHOWN_ERRORS
        if more > 0:
            parts.append(f"and {more} more")
        head = f"{self.filename}: " if self.filename else ""
        noun = "error" if len(self.errors) == 1 else "errors"
        capped = f" (stopped at {MAX_ERRORS})" if len(self.errors) >= MAX_ERRORS else ""
        return f"{head}{len(self.errors)} {noun}{capped}: " + "; ".join(parts)


class _Errors:
    """Collects row errors; stops the read once MAX_ERRORS are in."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, row: int, field_name: str, message: str) -> None:
        if len(self.items) < MAX_ERRORS:
            self.items.append({"row": row, "field": field_name, "message": message})

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS


def read_dataset(
    path: str | os.PathLike[str], *, max_bytes: int | None = None
) -> list[PromptRecord]:
    """Read a dataset file; the format comes from the suffix (see SUFFIXES)."""
    path = Path(path)
    _check_suffix(path.name)
    # Check the size before reading so an oversize upload never lands in memory.
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DatasetError([_too_big(size, max_bytes)], path.name)
    return read_dataset_bytes(path.read_bytes(), path.name, max_bytes=max_bytes)


def read_dataset_bytes(
    data: bytes, filename: str, *, max_bytes: int | None = None
) -> list[PromptRecord]:
    """Read a dataset held in memory (an upload); `filename` gives the format by its suffix."""
    suffix = _check_suffix(filename)
    if max_bytes is not None and len(data) > max_bytes:
        raise DatasetError([_too_big(len(data), max_bytes)], filename)
    if not data.strip():
        raise DatasetError([_whole_file("file is empty")], filename)
    errors = _Errors()
    if suffix == ".parquet":
        rows = _parquet_rows(data, errors)
    elif suffix == ".csv":
        rows = _csv_rows(data, errors)
    else:
        rows = _json_rows(data, errors)
    records = _records(rows, errors)
    if errors.items:
        raise DatasetError(errors.items, filename)
    if not records:
        raise DatasetError([_whole_file("file has no rows")], filename)
    return records


def _check_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise DatasetError(
            [
                _whole_file(
                    f"unknown format {suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)}"
                )
            ],
            filename,
        )
    return suffix


def _whole_file(message: str) -> dict[str, Any]:
    return {"row": 0, "field": "file", "message": message}


def _too_big(size: int, max_bytes: int) -> dict[str, Any]:
    return _whole_file(f"file is {size} bytes, over the limit of {max_bytes} bytes")


# Each reader yields (row number, row dict); a row it cannot decode goes to `errors`.


def _json_rows(data: bytes, errors: _Errors) -> list[tuple[int, Any]]:
    data = data.removeprefix(b"\xef\xbb\xbf")
    if data.lstrip().startswith(b"["):  # a .json file holding one array of rows
        text = _decode_all(data, errors)
        if text is None:
            return []
        try:
            return list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as e:
            errors.add(e.lineno, "file", f"invalid JSON: {e.msg} (column {e.colno})")
            return []
    rows = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start, offset = offset, offset + len(raw) + 1
        if errors.full:
            break
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            errors.add(number, "file", f"not UTF-8: bad byte at offset {start + e.start}")
            continue
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            errors.add(number, "file", f"invalid JSON: {e.msg} (column {e.colno})")
    return rows


def _csv_rows(data: bytes, errors: _Errors) -> list[tuple[int, Any]]:
    text = _decode_all(data.removeprefix(b"\xef\xbb\xbf"), errors)
    if text is None:
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    missing = [c for c in ("prompt", "ground_truth") if c not in columns]
    for name in missing:
        errors.add(0, name, f"missing column (columns are: {', '.join(columns) or 'none'})")
    if missing:
        return []
    # Empty cells mean "not given"; a CSV cannot tell an empty string from a missing value.
    return [
        (number, {k: v for k, v in row.items() if k is not None and v not in ("", None)})
        for number, row in enumerate(reader, start=1)
    ]


def _parquet_rows(data: bytes, errors: _Errors) -> list[tuple[int, Any]]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        errors.add(0, "file", f"not a readable Parquet file (truncated?): {e}")
        return []
    columns = table.column_names
    listed = f"columns are: {', '.join(columns) or 'none'}"
    if "prompt" not in columns:
        errors.add(0, "prompt", f"missing column ({listed})")
    if not {"reward_model", "ground_truth", "answer"} & set(columns):
        errors.add(0, "reward_model", f"missing column, or ground_truth/answer ({listed})")
    if errors.items:
        return []
    # Parquet nulls (from struct fields absent on a row) mean "not given".
    return [(number, _drop_nulls(row)) for number, row in enumerate(table.to_pylist(), start=1)]


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_nulls(v) if isinstance(v, dict) else v for k, v in row.items() if v is not None
    }


def _decode_all(data: bytes, errors: _Errors) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        errors.add(line, "file", f"not UTF-8: bad byte at offset {e.start} (line {line})")
        return None


# From row dicts to records: one set of rules for every format.


def _records(rows: list[tuple[int, Any]], errors: _Errors) -> list[PromptRecord]:
    records: list[PromptRecord] = []
    first_row: dict[str, int] = {}
    for number, row in rows:
        if errors.full:
            break
        record = _record(number, row, errors)
        if record is None:
            continue
        if record.key in first_row:
            errors.add(
                number,
                "key",
                f"duplicate key {record.key!r} (rows {first_row[record.key]} and {number})",
            )
            continue
        first_row[record.key] = number
        records.append(record)
    return records


def _record(number: int, row: Any, errors: _Errors) -> PromptRecord | None:
    if not isinstance(row, dict):
        errors.add(number, "row", f"expected an object, got {type(row).__name__}")
        return None
    before = len(errors.items)

    def bad(field_name: str, message: str) -> None:
        errors.add(number, field_name, message)

    extra = row.get("extra_info", {})
    if not isinstance(extra, dict):
        bad("extra_info", f"expected an object, got {type(extra).__name__}")
        extra = {}
    prompt = _prompt(row.get("prompt"), bad)
    ground_truth = _ground_truth(row, bad)
    data_source = _text(row.get("data_source", ""), "data_source", bad)
    index = _index(row, extra, bad)
    difficulty = _text(row.get("difficulty", extra.get("difficulty", "")), "difficulty", bad)
    split = _text(row.get("split", extra.get("split", "")), "split", bad)
    key = _key(row, data_source, index, bad)
    if len(errors.items) > before:
        return None
    return PromptRecord(
        key=key,
        prompt=prompt,
        ground_truth=ground_truth,
        data_source=data_source,
        index=-1 if index is None else index,
        difficulty=difficulty,
        split=split,
        extra_info=extra,
    )


def _prompt(value: Any, bad: _Bad) -> Any:
    if value is None:
        bad("prompt", "missing")
    elif isinstance(value, str):
        if not value.strip():
            bad("prompt", "empty")
        return value
    elif isinstance(value, list) and value:
        messages = []
        for i, item in enumerate(value):
            ok = (
                isinstance(item, dict)
                and isinstance(item.get("role"), str)
                and isinstance(item.get("content"), str)
            )
            if not ok:
                bad(f"prompt[{i}]", "expected a message with text 'role' and 'content'")
                return None
            messages.append({"role": item["role"], "content": item["content"]})
        return messages
    else:
        bad("prompt", f"expected text or a non-empty list of chat messages, got {_kind(value)}")
    return None


def _ground_truth(row: dict[str, Any], bad: _Bad) -> str:
    if "reward_model" in row:
        name, holder = "reward_model.ground_truth", row["reward_model"]
        if not isinstance(holder, dict):
            bad("reward_model", f"expected an object, got {_kind(holder)}")
            return ""
    else:
        name = "answer" if "answer" in row and "ground_truth" not in row else "ground_truth"
        holder = row
    value = holder.get(name.rsplit(".", 1)[-1])
    if value is None:
        bad(name, "missing")
        return ""
    # Numbers are accepted as their decimal text; bool is a JSON mistake, not an answer.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        bad(name, f"expected text, got {_kind(value)}")
        return ""
    if not value.strip():
        bad(name, "empty")
    return value


def _index(row: dict[str, Any], extra: dict[str, Any], bad: _Bad) -> int | None:
    name = "index" if "index" in row else "extra_info.index"
    value = row.get("index", extra.get("index"))
    if value is None:
        return None
    if isinstance(value, str):  # CSV cells are text
        try:
            return int(value)
        except ValueError:
            pass
    elif (
        isinstance(value, float) and value.is_integer()
    ):  # pandas turns int columns with gaps to float
        return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    bad(name, f"expected an integer, got {value!r}")
    return None


def _key(row: dict[str, Any], data_source: str, index: int | None, bad: _Bad) -> str:
    value = row.get("key")
    if value is None:
        if data_source and index is not None:
            return f"{data_source}:{index}"
        bad("key", "missing: give a 'key', or 'data_source' and 'extra_info.index'")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        bad("key", f"expected non-empty text, got {value!r}")
        return ""
    return value


def _text(value: Any, name: str, bad: _Bad) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        bad(name, f"expected text, got {_kind(value)}")
        return ""
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
