"""A dataset file is bounded in what it decodes to, not only in its bytes: rows, decoded size
(Parquet dictionaries and compression expand), prompt and answer length, over-long CSV cells
and the text the database stores. Every file here is small on disk; every refusal is a row
error that says what to do, and comes fast."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.problems.dataset import DatasetError, DatasetLimits, read_dataset_bytes

KIB = 1024


def repeated(value: str, n: int) -> pa.DictionaryArray:
    """n rows holding one value, held once: what a dictionary-encoded column decodes from."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value]))


def parquet(table: pa.Table, **options) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", **options)
    return buffer.getvalue()


def chat_bomb(n: int, size: int) -> bytes:
    """verl's layout (prompt: list<struct<role, content>>) with one long content on every row."""
    messages = pa.StructArray.from_arrays([repeated("user", n), repeated("a" * size, n)], names=["role", "content"])
    prompt = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)), messages)
    answer = pa.StructArray.from_arrays([repeated("1", n)], names=["ground_truth"])
    return parquet(pa.table({"prompt": prompt, "reward_model": answer, "data_source": repeated("x", n),
                             "index": pa.array(np.arange(n))}))


def refusal(data: bytes, filename: str, limits: DatasetLimits | None = None) -> list[dict]:
    started = time.monotonic()
    with pytest.raises(DatasetError) as caught:
        read_dataset_bytes(data, filename, max_bytes=50 * 1024 * KIB, limits=limits)
    assert time.monotonic() - started < 5, "refused only after decoding"
    return caught.value.errors


@pytest.mark.parametrize(("rows", "size"), [(20_000, 300 * KIB), (1024, 300 * KIB), (70_000, 4 * KIB)])
def test_a_dictionary_encoded_parquet_that_expands_past_the_decoded_limit_is_refused_before_decoding(rows, size):
    data = chat_bomb(rows, size)
    assert len(data) < 1024 * KIB  # a small upload ...
    assert rows * size > DatasetLimits().max_decoded_bytes  # ... that decodes to more than the limit
    [error] = refusal(data, "bomb.parquet")
    assert error["row"] == 0 and "decode to more than" in error["message"]
    assert "EDGEPLANE_DATASET_MAX_DECODED_BYTES" in error["message"] and "split the file" in error["message"]


def test_a_top_level_dictionary_column_counts_too():
    n = 2000
    data = parquet(pa.table({"prompt": repeated("p" * (200 * KIB), n), "ground_truth": repeated("1", n),
                             "key": pa.array([str(i) for i in range(n)])}))
    [error] = refusal(data, "flat.parquet")
    assert "decode to more than" in error["message"]


def test_a_compressed_plain_parquet_is_refused_from_its_footer():
    n = 16
    data = parquet(pa.table({"prompt": ["a" * (1024 * KIB)] * n, "ground_truth": ["1"] * n,
                             "key": [str(i) for i in range(n)]}), use_dictionary=False)
    assert len(data) < 64 * KIB
    [error] = refusal(data, "plain.parquet", DatasetLimits(max_decoded_bytes=8 * 1024 * KIB))
    assert "decode to more than 8388608 bytes (at least 16" in error["message"]


def test_rows_past_the_row_limit_are_refused_in_every_format(monkeypatch):
    n = DatasetLimits().max_rows + 1
    data = parquet(pa.table({"prompt": repeated("1+1=", n), "ground_truth": repeated("2", n),
                             "key": pa.array(np.arange(n))}))
    [error] = refusal(data, "many.parquet")
    assert f"{n} rows, over the limit of {n - 1}" in error["message"]
    monkeypatch.setenv("EDGEPLANE_DATASET_MAX_ROWS", "3")  # an operator's lower limit, from the environment
    lines = "".join(json.dumps({"key": str(i), "prompt": "q", "answer": "a"}) + "\n" for i in range(4))
    assert "over the limit of 3" in refusal(lines.encode(), "d.jsonl")[0]["message"]
    assert "over the limit of 3" in refusal(("[" + lines.strip().replace("\n", ",") + "]").encode(),
                                            "d.json")[0]["message"]
    csv_text = "key,prompt,ground_truth\n" + "".join(f"{i},q,a\n" for i in range(4))
    assert "over the limit of 3" in refusal(csv_text.encode(), "d.csv")[0]["message"]
    assert len(read_dataset_bytes(csv_text.encode()[:-6], "d.csv")) == 3


def test_a_45_mb_prompt_in_a_small_parquet_file_is_refused_by_row():
    data = parquet(pa.table({"prompt": ["x" * (45 * 1024 * KIB), "fine"], "ground_truth": ["1", "2"],
                             "key": ["a", "b"]}), use_dictionary=False)
    assert len(data) < 64 * KIB
    [error] = refusal(data, "long.parquet")
    assert (error["row"], error["field"]) == (1, "prompt")
    assert "over the limit of 32768 bytes (EDGEPLANE_DATASET_MAX_PROMPT_BYTES): shorten" in error["message"]


def row(**fields) -> bytes:
    return (json.dumps({"key": "k", "prompt": "q", "answer": "a", **fields}) + "\n").encode()


def test_prompt_and_answer_lengths_are_bounded_at_the_byte():
    limits = DatasetLimits()
    at_limit = row(prompt="p" * limits.max_prompt_bytes, answer="a" * limits.max_answer_bytes)
    assert read_dataset_bytes(at_limit, "d.jsonl")[0].prompt == "p" * limits.max_prompt_bytes
    cases = [
        (row(prompt="p" * (limits.max_prompt_bytes + 1)), "prompt", "EDGEPLANE_DATASET_MAX_PROMPT_BYTES"),
        (row(prompt="é" * (limits.max_prompt_bytes // 2 + 1)), "prompt", "32770 bytes"),  # bytes, not characters
        (row(prompt=[{"role": "user", "content": "c" * (limits.max_prompt_bytes // 2)}] * 2), "prompt",
         "roles and contents together"),
        (row(prompt=[{"role": "user", "content": "c"}] * (limits.max_messages + 1)), "prompt",
         "EDGEPLANE_DATASET_MAX_MESSAGES"),
        (row(answer="a" * (limits.max_answer_bytes + 1)), "answer", "EDGEPLANE_DATASET_MAX_ANSWER_BYTES"),
        (json.dumps({"key": "k", "prompt": "q", "reward_model": {"ground_truth": "9" * 5000}}).encode(),
         "reward_model.ground_truth", "EDGEPLANE_DATASET_MAX_ANSWER_BYTES"),
    ]
    for data, field, says in cases:
        [error] = refusal(b"\n" + data, "d.jsonl")
        assert (error["row"], error["field"]) == (2, field) and says in error["message"], error


def test_an_over_long_csv_cell_is_a_row_error_not_a_crash():
    data = ("key,prompt,ground_truth\n1,short,2\n2," + "x" * 200_000 + ",3\n").encode()
    [error] = refusal(data, "d.csv")
    assert (error["row"], error["field"]) == (2, "file")
    assert "a cell is longer than 131072 characters" in error["message"] and "shorten it" in error["message"]
    unclosed = b'key,prompt,ground_truth\n1,"never closed,2\n' + b"y" * 140_000 + b"\n"
    assert "unclosed quote" in refusal(unclosed, "d.csv")[0]["message"]


def test_text_the_database_stores_in_fixed_columns_is_bounded():
    cases = [
        (row(key="k" * 256), "key", "over the limit of 255"),
        (row(data_source="s" * 201), "data_source", "over the limit of 200"),
        (row(split="s" * 33), "split", "over the limit of 32"),
        (row(difficulty="d" * 65), "difficulty", "over the limit of 64"),
        (row(index=2**70), "index", "must fit in 64 bits"),
        (b'{"key": "k", "prompt": "q", "answer": "a", "extra_info": {"x": NaN}}\n', "extra_info", "NaN"),
        (row(extra_info={"x": "v" * (17 * KIB)}), "extra_info", "EDGEPLANE_DATASET_MAX_EXTRA_INFO_BYTES"),
        (b'{"key": "k", "prompt": "q", "answer": Infinity}\n', "answer", "finite"),
        (b'{"key": "k", "prompt": "q", "answer": ' + b"9" * 5000 + b"}\n", "file", "write long numbers as text"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "file", "nested too deeply"),
    ]
    for data, field, says in cases:
        [error] = refusal(data, "d.jsonl")
        assert error["field"] == field and says in error["message"], (field, error)
    assert "nested too deeply" in refusal(b"[" * 100_000 + b"]" * 100_000, "d.json")[0]["message"]


def test_limits_come_from_the_environment_and_bad_values_say_so(monkeypatch):
    monkeypatch.setenv("EDGEPLANE_DATASET_MAX_PROMPT_BYTES", "65536")
    assert DatasetLimits.from_environ().max_prompt_bytes == 65536
    assert read_dataset_bytes(row(prompt="p" * 40_000), "d.jsonl")[0].prompt == "p" * 40_000
    monkeypatch.setenv("EDGEPLANE_DATASET_MAX_ROWS", "lots")
    with pytest.raises(ValueError, match="EDGEPLANE_DATASET_MAX_ROWS must be a whole number"):
        DatasetLimits.from_environ()
