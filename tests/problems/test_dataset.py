import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.problems.dataset import (
    MAX_ERRORS,
    DatasetError,
    PromptRecord,
    read_dataset,
    read_dataset_bytes,
)


def verl_row(index, *, answer="42", **overrides):
    row = {
        "data_source": "gsm8k",
        "prompt": [{"role": "user", "content": f"question {index}"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": "train", "index": index, "difficulty": "easy"},
    }
    row.update(overrides)
    return row


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def errors_of(excinfo):
    return [(e["row"], e["field"]) for e in excinfo.value.errors]


def test_it_reads_verl_jsonl_with_chat_prompts_and_derives_keys(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [verl_row(7), verl_row(8, answer="5")])
    records = read_dataset(path)
    assert [r.key for r in records] == ["gsm8k:7", "gsm8k:8"]
    first = records[0]
    assert first.prompt == [{"role": "user", "content": "question 7"}]
    assert (first.ground_truth, first.data_source, first.index) == ("42", "gsm8k", 7)
    assert (first.difficulty, first.split) == ("easy", "train")
    assert records[1].ground_truth == "5"


def test_an_explicit_key_wins_over_data_source_and_index(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [verl_row(1, key="mine-1")])
    assert read_dataset(path)[0].key == "mine-1"


def test_it_accepts_text_prompts_with_top_level_ground_truth_or_answer(tmp_path):
    rows = [
        {"key": "a", "prompt": "2+2=", "ground_truth": 4, "difficulty": "d1"},
        {"key": "b", "prompt": "3+3=", "answer": "6"},
    ]
    records = read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [(r.prompt, r.ground_truth) for r in records] == [("2+2=", "4"), ("3+3=", "6")]
    assert records[0].difficulty == "d1"
    assert records[1].index == -1


def test_a_json_file_may_hold_one_array_of_rows(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([verl_row(1), verl_row(2)]), encoding="utf-8")
    assert [r.key for r in read_dataset(path)] == ["gsm8k:1", "gsm8k:2"]


def test_it_reads_verl_parquet_with_struct_columns(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [verl_row(3), verl_row(4, answer="x")])
    records = read_dataset(path)
    assert [(r.key, r.ground_truth, r.difficulty) for r in records] == [
        ("gsm8k:3", "42", "easy"),
        ("gsm8k:4", "x", "easy"),
    ]
    assert records[0].prompt == [{"role": "user", "content": "question 3"}]


def test_it_reads_csv_with_optional_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "prompt,ground_truth,data_source,index,difficulty,split\n"
        '"1+1=",2,toy,0,easy,train\n'
        '"say ""hi""",hi,toy,1,,test\n',
        encoding="utf-8",
    )
    records = read_dataset(path)
    assert [r.key for r in records] == ["toy:0", "toy:1"]
    assert records[1].prompt == 'say "hi"'
    assert (records[0].difficulty, records[1].difficulty) == ("easy", "")
    assert records[1].split == "test"


def test_reading_bytes_gives_the_same_records_as_reading_the_file(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [verl_row(i) for i in range(5)])
    assert read_dataset_bytes(path.read_bytes(), "upload.parquet") == read_dataset(path)


def test_a_truncated_parquet_file_fails_as_a_whole(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", [verl_row(i) for i in range(50)])
    data = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(cut)
    assert errors_of(excinfo) == [(0, "file")]
    assert "Parquet" in str(excinfo.value)


def test_a_jsonl_file_named_parquet_is_not_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_text(json.dumps(verl_row(1)), encoding="utf-8")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(0, "file")]


def test_parquet_without_prompt_or_answer_columns_names_them(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [{"question": "q", "data_source": "x"}])
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(0, "prompt"), (0, "reward_model")]
    assert "question" in str(excinfo.value)  # lists the columns the file does have


def test_csv_without_ground_truth_column_names_it(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,answer_text\nq,1\n", encoding="utf-8")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(0, "ground_truth")]


def test_non_utf8_bytes_in_jsonl_name_the_row_and_byte_offset(tmp_path):
    first = (json.dumps(verl_row(1)) + "\n").encode()
    second = json.dumps(verl_row(2, answer="caf\u00e9")).encode().replace(b"caf\\u00e9", b"caf\xe9")
    path = tmp_path / "d.jsonl"
    path.write_bytes(first + second + b"\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(2, "file")]
    offset = len(first) + second.index(b"\xe9")
    assert f"offset {offset}" in excinfo.value.errors[0]["message"]


def test_non_utf8_bytes_in_csv_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"prompt,ground_truth,key\nq,1,a\nq\xff,2,b\n")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(3, "file")]
    assert "UTF-8" in str(excinfo.value)


def test_invalid_json_on_a_row_names_that_row(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(verl_row(1)), json.dumps(verl_row(2)), '{"prompt": "q", ']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(3, "file")]
    assert "invalid JSON" in str(excinfo.value)


def test_wrong_types_name_the_field(tmp_path):
    rows = [
        verl_row(1, prompt=17),
        verl_row(2, prompt=[{"role": "user"}]),
        verl_row(3, reward_model="42"),
        verl_row(4, extra_info={"index": "four"}),
        ["not", "an", "object"],
    ]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert errors_of(excinfo) == [
        (1, "prompt"),
        (2, "prompt[0]"),
        (3, "reward_model"),
        (4, "extra_info.index"),
        (4, "key"),  # no usable index, so no key either
        (5, "row"),
    ]


def test_an_empty_or_missing_ground_truth_is_an_error(tmp_path):
    rows = [verl_row(1, answer="  "), verl_row(2, reward_model={"style": "rule"})]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert errors_of(excinfo) == [
        (1, "reward_model.ground_truth"),
        (2, "reward_model.ground_truth"),
    ]
    assert [e["message"] for e in excinfo.value.errors] == ["empty", "missing"]


def test_a_row_without_key_or_data_source_and_index_is_an_error(tmp_path):
    rows = [{"prompt": "q", "ground_truth": "1", "data_source": "x"}]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert errors_of(excinfo) == [(1, "key")]


def test_duplicate_keys_name_both_rows(tmp_path):
    rows = [verl_row(1), verl_row(2), verl_row(1)]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert errors_of(excinfo) == [(3, "key")]
    assert "rows 1 and 3" in excinfo.value.errors[0]["message"]


def test_duplicate_keys_in_parquet_are_caught_too(tmp_path):
    path = write_parquet(tmp_path / "d.parquet", [verl_row(5, key="k"), verl_row(6, key="k")])
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path)
    assert errors_of(excinfo) == [(2, "key")]


def test_it_collects_every_bad_row_instead_of_stopping_at_the_first(tmp_path):
    rows = [verl_row(i, answer="" if i % 2 else "1") for i in range(10)]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [row for row, _ in errors_of(excinfo)] == [2, 4, 6, 8, 10]


def test_it_stops_collecting_at_the_error_cap(tmp_path):
    rows = [verl_row(i, prompt=None) for i in range(MAX_ERRORS + 50)]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert len(excinfo.value.errors) == MAX_ERRORS
    assert f"stopped at {MAX_ERRORS}" in str(excinfo.value)


def test_an_empty_file_is_an_error(tmp_path):
    for name, content in [("a.jsonl", b""), ("b.jsonl", b"\n\n  \n"), ("c.csv", b"")]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DatasetError) as excinfo:
            read_dataset(path)
        assert errors_of(excinfo) == [(0, "file")]


def test_a_csv_with_only_a_header_has_no_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,ground_truth\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="no rows"):
        read_dataset(path)


def test_a_file_over_max_bytes_is_refused_before_parsing(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [verl_row(i) for i in range(20)])
    size = path.stat().st_size
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(path, max_bytes=size - 1)
    assert errors_of(excinfo) == [(0, "file")]
    assert str(size - 1) in str(excinfo.value)
    with pytest.raises(DatasetError, match="over the limit"):
        read_dataset_bytes(path.read_bytes(), "d.jsonl", max_bytes=100)
    assert len(read_dataset(path, max_bytes=size)) == 20


def test_an_unknown_suffix_names_the_accepted_ones(tmp_path):
    with pytest.raises(DatasetError) as excinfo:
        read_dataset_bytes(b"{}", "data.txt")
    message = str(excinfo.value)
    assert "'.txt'" in message
    for suffix in (".jsonl", ".json", ".parquet", ".csv"):
        assert suffix in message


def test_the_error_message_lists_the_first_errors_readably(tmp_path):
    rows = [verl_row(1), verl_row(2), verl_row(3, reward_model={})]
    with pytest.raises(DatasetError) as excinfo:
        read_dataset(write_jsonl(tmp_path / "d.jsonl", rows))
    assert str(excinfo.value) == "d.jsonl: 1 error: row 3, field reward_model.ground_truth: missing"
    assert isinstance(excinfo.value, ValueError)


text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1).filter(
    str.strip
)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(text, text), min_size=1, max_size=5))
def test_any_text_survives_a_jsonl_and_parquet_round_trip(pairs):
    rows = [
        {"key": f"k{i}", "prompt": prompt, "ground_truth": answer}
        for i, (prompt, answer) in enumerate(pairs)
    ]
    expected = [
        PromptRecord(key=f"k{i}", prompt=p, ground_truth=a, data_source="", index=-1)
        for i, (p, a) in enumerate(pairs)
    ]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    assert read_dataset_bytes(jsonl, "d.jsonl") == expected
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    assert read_dataset_bytes(sink.getvalue().to_pybytes(), "d.parquet") == expected
