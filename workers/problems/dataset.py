"""Prompt datasets from local files in verl's format: JSONL, Parquet and CSV.

A row carries `prompt` (text or a chat list of {role, content}), the answer in
`reward_model.ground_truth` (verl) or a top-level `ground_truth`/`answer`, `data_source`
and `extra_info.index`. The stable key is an explicit `key`, else `data_source:index`.

Reading is all or nothing: either every row becomes a PromptRecord, or DatasetError
lists what is wrong, row by row (up to MAX_ERRORS). `row` is the line for JSONL and the
data row (header not counted) for CSV and Parquet; row 0 means the whole file.

What a file may hold is bounded (``DatasetLimits``, docs/limits.md): rows, the bytes its rows
decode to (a small Parquet file of dictionary-encoded repeats can decode to thousands of
times its size: the decoded size is counted from the dictionaries before a value is
materialised), prompt and answer length, and the text fields the database stores.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MAX_ERRORS = 100
_SHOWN_ERRORS = 5  # how many errors str(DatasetError) spells out

_Bad = Callable[[str, str], None]  # reports (field, message) for the current row
_PARQUET_BATCH_ROWS = 1024
_INT64 = (-(2**63), 2**63 - 1)  # the index column (a BigIntegerField)
# Text fields stored in columns of a fixed width (controlplane/datasets/models.py Prompt).
TEXT_LIMITS = {"key": 255, "data_source": 200, "difficulty": 64, "split": 32}


@dataclass(frozen=True)
class DatasetLimits:
    """What one dataset file may hold. Each limit is overridable from the environment
    (``EDGEPLANE_DATASET_<NAME>``, e.g. EDGEPLANE_DATASET_MAX_PROMPT_BYTES=65536), read by the
    control plane and the workers alike, so both accept the same files."""

    max_rows: int = 1_000_000
    max_decoded_bytes: int = 256 * 1024 * 1024  # the rows' text and values once decoded
    max_prompt_bytes: int = 32 * 1024  # UTF-8 bytes of a text prompt, or of a chat's contents together
    max_answer_bytes: int = 4 * 1024
    max_messages: int = 256  # messages of a chat prompt
    max_extra_info_bytes: int = 16 * 1024  # extra_info as JSON

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DatasetLimits:
        environ = os.environ if environ is None else environ
        values = {}
        for f in cls.__dataclass_fields__.values():
            name = f"EDGEPLANE_DATASET_{f.name.upper()}"
            raw = environ.get(name, "").strip()
            if raw:
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"{name} must be a whole number of {f.name.split('_')[-1]}, got {raw!r}") from exc
                if values[f.name] < 1:
                    raise ValueError(f"{name} must be >= 1, got {raw!r}")
        return cls(**values)


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

    def add_item(self, item: dict[str, Any]) -> None:
        self.add(item["row"], item["field"], item["message"])

    @property
    def full(self) -> bool:
        return len(self.items) >= MAX_ERRORS


def read_dataset(
    path: str | os.PathLike[str], *, max_bytes: int | None = None, limits: DatasetLimits | None = None
) -> list[PromptRecord]:
    """Read a dataset file; the format comes from the suffix (see SUFFIXES)."""
    path = Path(path)
    _check_suffix(path.name)
    # Check the size before reading so an oversize upload never lands in memory.
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise DatasetError([_too_big(size, max_bytes)], path.name)
    return read_dataset_bytes(path.read_bytes(), path.name, max_bytes=max_bytes, limits=limits)


def read_dataset_bytes(
    data: bytes, filename: str, *, max_bytes: int | None = None, limits: DatasetLimits | None = None
) -> list[PromptRecord]:
    """Read a dataset held in memory (an upload); `filename` gives the format by its suffix.
    ``limits``: DatasetLimits.from_environ() when not given."""
    suffix = _check_suffix(filename)
    limits = limits or DatasetLimits.from_environ()
    if max_bytes is not None and len(data) > max_bytes:
        raise DatasetError([_too_big(len(data), max_bytes)], filename)
    if not data.strip():
        raise DatasetError([_whole_file("file is empty")], filename)
    errors = _Errors()
    if suffix == ".parquet":
        rows = _parquet_rows(data, errors, limits)
    elif suffix == ".csv":
        rows = _csv_rows(data, errors, limits)
    else:
        rows = _json_rows(data, errors, limits)
    records = _records(rows, errors, limits)
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


def _too_many_rows(limits: DatasetLimits, rows: int | None = None) -> dict[str, Any]:
    held = f"{rows} rows" if rows is not None else "more rows"
    return _whole_file(f"file holds {held}, over the limit of {limits.max_rows} "
                       "(EDGEPLANE_DATASET_MAX_ROWS): split it into several datasets")


def _too_much_decoded(limits: DatasetLimits, size: int) -> dict[str, Any]:
    return _whole_file(f"rows decode to more than {limits.max_decoded_bytes} bytes (at least {size}; "
                       "EDGEPLANE_DATASET_MAX_DECODED_BYTES): repeated values in a compressed or "
                       "dictionary-encoded file count once per row; split the file or shorten the rows")


# Each reader yields (row number, row dict); a row it cannot decode goes to `errors`.


def _json_rows(data: bytes, errors: _Errors, limits: DatasetLimits) -> list[tuple[int, Any]]:
    data = data.removeprefix(b"\xef\xbb\xbf")
    if data.lstrip().startswith(b"["):  # a .json file holding one array of rows
        text = _decode_all(data, errors)
        if text is None:
            return []
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            errors.add(e.lineno, "file", f"invalid JSON: {e.msg} (column {e.colno})")
            return []
        except (ValueError, RecursionError) as e:  # a number of 5,000 digits, nesting past the stack
            errors.add(0, "file", f"invalid JSON: {_json_problem(e)}")
            return []
        if len(rows) > limits.max_rows:
            errors.add_item(_too_many_rows(limits, len(rows)))
            return []
        return list(enumerate(rows, start=1))
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
        if len(rows) >= limits.max_rows:
            errors.add_item(_too_many_rows(limits))
            break
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as e:
            errors.add(number, "file", f"invalid JSON: {e.msg} (column {e.colno})")
        except (ValueError, RecursionError) as e:
            errors.add(number, "file", f"invalid JSON: {_json_problem(e)}")
    return rows


def _json_problem(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply: a row is an object of text fields, a prompt a list of messages"
    return f"{exc}: write long numbers as text"


def _csv_rows(data: bytes, errors: _Errors, limits: DatasetLimits) -> list[tuple[int, Any]]:
    text = _decode_all(data.removeprefix(b"\xef\xbb\xbf"), errors)
    if text is None:
        return []
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[tuple[int, Any]] = []
    try:
        columns = reader.fieldnames or []
        missing = [c for c in ("prompt", "ground_truth") if c not in columns]
        for name in missing:
            errors.add(0, name, f"missing column (columns are: {', '.join(columns) or 'none'})")
        if missing:
            return []
        # Empty cells mean "not given"; a CSV cannot tell an empty string from a missing value.
        for row in reader:
            if len(rows) >= limits.max_rows:
                errors.add_item(_too_many_rows(limits))
                break
            rows.append((len(rows) + 1, {k: v for k, v in row.items() if k is not None and v not in ("", None)}))
    except csv.Error as e:
        # The csv module refuses a cell over its field size limit (or a stray quote) for the
        # whole file; the row is the data row it was reading.
        errors.add(len(rows) + 1, "file", _csv_problem(e))
    return rows


def _csv_problem(exc: csv.Error) -> str:
    if "field larger than field limit" in str(exc):
        return (f"a cell is longer than {csv.field_size_limit()} characters, the longest a CSV cell may be "
                "(prompts are limited to fewer bytes anyway): shorten it, or check for an unclosed quote")
    return f"not readable as CSV: {exc}"


def _parquet_rows(data: bytes, errors: _Errors, limits: DatasetLimits) -> list[tuple[int, Any]]:
    """Rows of a Parquet file, bounded before they are decoded: the row count and the
    uncompressed size from the footer, then batch by batch the size the rows decode to, counted
    on text columns read as dictionaries (a value repeated a million times is held once), and
    only then materialised."""
    try:
        footer = pq.ParquetFile(pa.BufferReader(data))
        meta = footer.metadata
        if meta.num_rows > limits.max_rows:
            errors.add_item(_too_many_rows(limits, meta.num_rows))
            return []
        uncompressed = sum(meta.row_group(i).column(j).total_uncompressed_size
                           for i in range(meta.num_row_groups) for j in range(meta.num_columns))
        if uncompressed > limits.max_decoded_bytes:
            errors.add_item(_too_much_decoded(limits, uncompressed))
            return []
        columns = footer.schema_arrow.names
        listed = f"columns are: {', '.join(columns) or 'none'}"
        if "prompt" not in columns:
            errors.add(0, "prompt", f"missing column ({listed})")
        if not {"reward_model", "ground_truth", "answer"} & set(columns):
            errors.add(0, "reward_model", f"missing column, or ground_truth/answer ({listed})")
        if errors.items:
            return []
        text_columns = [footer.schema.column(i).path for i in range(len(footer.schema))
                        if footer.schema.column(i).physical_type == "BYTE_ARRAY"]
        reader = pq.ParquetFile(pa.BufferReader(data), read_dictionary=text_columns)
        rows: list[tuple[int, Any]] = []
        decoded = 0
        for batch in _batches(reader):
            decoded += _decoded_bytes(batch)
            if decoded > limits.max_decoded_bytes:
                errors.add_item(_too_much_decoded(limits, decoded))
                return []
            if len(rows) + batch.num_rows > limits.max_rows:
                errors.add_item(_too_many_rows(limits))
                return []
            # Parquet nulls (from struct fields absent on a row) mean "not given".
            rows.extend((len(rows) + 1, _drop_nulls(row)) for row in batch.to_pylist())
        return rows
    except (pa.ArrowException, OSError, ValueError) as e:
        errors.add(0, "file", f"not a readable Parquet file (truncated?): {e}")
        return []


def _batches(reader: pq.ParquetFile) -> Iterator[pa.RecordBatch]:
    yield from reader.iter_batches(batch_size=_PARQUET_BATCH_ROWS)


def _decoded_bytes(data: pa.RecordBatch | pa.Array) -> int:
    """Bytes the values take once decoded, without decoding them: a dictionary column counts
    its values' lengths once per row that uses them."""
    if isinstance(data, pa.RecordBatch):
        return sum(_decoded_bytes(column) for column in data.columns)
    kind = data.type
    if pa.types.is_dictionary(kind):
        lengths = pc.binary_length(data.dictionary) if _is_text(kind.value_type) else None
        if lengths is None:
            return int(data.nbytes)
        used = pc.sum(pc.take(lengths, data.indices)).as_py() or 0
        return int(used) + int(data.indices.nbytes)
    if pa.types.is_struct(kind):
        return sum(_decoded_bytes(child) for child in data.flatten())
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind) \
            or pa.types.is_map(kind):
        return _decoded_bytes(data.flatten()) + 8 * len(data)
    return int(data.nbytes)


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
                or pa.types.is_large_binary(kind))


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


def _records(rows: list[tuple[int, Any]], errors: _Errors, limits: DatasetLimits) -> list[PromptRecord]:
    records: list[PromptRecord] = []
    first_row: dict[str, int] = {}
    for number, row in rows:
        if errors.full:
            break
        record = _record(number, row, errors, limits)
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


def _record(number: int, row: Any, errors: _Errors, limits: DatasetLimits) -> PromptRecord | None:
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
    _check_extra(extra, limits, bad)
    prompt = _prompt(row.get("prompt"), bad, limits)
    ground_truth = _ground_truth(row, bad, limits)
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


def _too_long(name: str, size: int, limit: int, setting: str, what: str) -> str:
    return f"{size} bytes, over the limit of {limit} bytes ({setting}): {what}"


def _prompt(value: Any, bad: _Bad, limits: DatasetLimits) -> Any:
    if value is None:
        bad("prompt", "missing")
    elif isinstance(value, str):
        if not value.strip():
            bad("prompt", "empty")
        size = _utf8_size(value)
        if size > limits.max_prompt_bytes:
            bad("prompt", _too_long("prompt", size, limits.max_prompt_bytes, "EDGEPLANE_DATASET_MAX_PROMPT_BYTES",
                                    "shorten the prompt"))
            return None
        return value
    elif isinstance(value, list) and value:
        if len(value) > limits.max_messages:
            bad("prompt", f"{len(value)} messages, over the limit of {limits.max_messages} "
                          "(EDGEPLANE_DATASET_MAX_MESSAGES): shorten the conversation")
            return None
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
        size = sum(_utf8_size(m["content"]) + _utf8_size(m["role"]) for m in messages)
        if size > limits.max_prompt_bytes:
            bad("prompt", _too_long("prompt", size, limits.max_prompt_bytes, "EDGEPLANE_DATASET_MAX_PROMPT_BYTES",
                                    "the messages' roles and contents together; shorten the prompt"))
            return None
        return messages
    else:
        bad("prompt", f"expected text or a non-empty list of chat messages, got {_kind(value)}")
    return None


def _ground_truth(row: dict[str, Any], bad: _Bad, limits: DatasetLimits) -> str:
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
    if isinstance(value, float) and not math.isfinite(value):
        bad(name, f"expected a finite number or text, got {value}")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        bad(name, f"expected text, got {_kind(value)}")
        return ""
    if not value.strip():
        bad(name, "empty")
    size = _utf8_size(value)
    if size > limits.max_answer_bytes:
        bad(name, _too_long(name, size, limits.max_answer_bytes, "EDGEPLANE_DATASET_MAX_ANSWER_BYTES",
                            "an answer a verifier compares is short; shorten it"))
        return ""
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
        if _INT64[0] <= value <= _INT64[1]:
            return value
        bad(name, f"must fit in 64 bits ([{_INT64[0]}, {_INT64[1]}]), got a {value.bit_length()}-bit number")
        return None
    bad(name, f"expected an integer, got {_short(value)}")
    return None


def _key(row: dict[str, Any], data_source: str, index: int | None, bad: _Bad) -> str:
    value = row.get("key")
    if value is None:
        if data_source and index is not None:
            return f"{data_source}:{index}"
        bad("key", "missing: give a 'key', or 'data_source' and 'extra_info.index'")
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        bad("key", f"expected non-empty text, got {_short(value)}")
        return ""
    if len(value) > TEXT_LIMITS["key"]:
        bad("key", f"{len(value)} characters, over the limit of {TEXT_LIMITS['key']}: use a shorter key")
        return ""
    return value


def _text(value: Any, name: str, bad: _Bad) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        bad(name, f"expected text, got {_kind(value)}")
        return ""
    limit = TEXT_LIMITS.get(name)
    if limit is not None and len(value) > limit:
        bad(name, f"{len(value)} characters, over the limit of {limit}: shorten it")
        return ""
    return value


def _check_extra(extra: dict[str, Any], limits: DatasetLimits, bad: _Bad) -> None:
    """extra_info is stored as JSON: no NaN or infinity (a database refuses them), no values
    JSON cannot hold (bytes from a Parquet binary column), and a bounded size."""
    try:
        size = len(json.dumps(extra, allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:
        problem = "NaN or infinity" if "JSON compliant" in str(exc) else "a value JSON cannot hold"
        bad("extra_info", f"holds {problem}, which cannot be stored: write such values as text or drop them")
        return
    if size > limits.max_extra_info_bytes:
        bad("extra_info", _too_long("extra_info", size, limits.max_extra_info_bytes,
                                    "EDGEPLANE_DATASET_MAX_EXTRA_INFO_BYTES", "keep extra_info to a few fields"))


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
