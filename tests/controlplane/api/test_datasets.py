"""Dataset uploads: 201 with the prompt count, or 400 with {row, field, message} and nothing stored."""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from controlplane.datasets.models import Dataset, Prompt


def verl_rows(n: int) -> list[dict]:
    return [{"data_source": "arith", "prompt": [{"role": "user", "content": f"{i}+1="}],
             "reward_model": {"style": "rule", "ground_truth": str(i + 1)}, "extra_info": {"index": i}}
            for i in range(n)]


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def upload(client, team, name: str, filename: str, data: bytes):
    return client.post("/api/datasets/", {"team": team.slug, "name": name,
                                          "file": SimpleUploadedFile(filename, data)}, format="multipart")


def assert_nothing_stored() -> None:
    assert Dataset.objects.count() == 0
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_a_jsonl_upload_in_verls_format_becomes_a_dataset(alice, team_a):
    data = jsonl(verl_rows(5))
    answer = upload(alice, team_a, "arith", "arith.jsonl", data)
    assert answer.status_code == 201
    body = answer.json()
    assert body["name"] == "arith" and body["team"] == "acme"
    assert body["prompt_count"] == 5
    assert body["content_hash"] == hashlib.sha256(data).hexdigest()
    assert Prompt.objects.filter(dataset_id=body["id"]).count() == 5
    assert alice.get(f"/api/datasets/{body['id']}/").json() == body


@pytest.mark.django_db
def test_a_parquet_upload_becomes_a_dataset(alice, team_a):
    answer = upload(alice, team_a, "arith", "arith.parquet", parquet(verl_rows(7)))
    assert answer.status_code == 201
    assert answer.json()["prompt_count"] == 7


@pytest.mark.django_db
def test_a_truncated_parquet_file_is_refused_and_nothing_is_stored(alice, team_a):
    whole = parquet(verl_rows(50))
    answer = upload(alice, team_a, "cut", "cut.parquet", whole[: len(whole) // 2])
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert errors and set(errors[0]) == {"row", "field", "message"}
    assert errors[0]["row"] == 0 and errors[0]["field"] == "file"
    assert "parquet" in errors[0]["message"].lower()
    assert_nothing_stored()


@pytest.mark.django_db
def test_a_file_with_the_wrong_columns_is_refused_and_nothing_is_stored(alice, team_a):
    answer = upload(alice, team_a, "cols", "cols.csv", b"question,answer\n1+1=,2\n")
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert {"prompt", "ground_truth"} <= fields
    assert_nothing_stored()


@pytest.mark.django_db
def test_duplicate_prompt_keys_are_refused_row_by_row_and_nothing_is_stored(alice, team_a):
    rows = verl_rows(3) + [verl_rows(3)[1]]  # row 4 repeats row 2's key arith:1
    answer = upload(alice, team_a, "dups", "dups.jsonl", jsonl(rows))
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert [e["row"] for e in errors] == [4]
    assert "arith:1" in errors[0]["message"]
    assert_nothing_stored()


@pytest.mark.django_db
def test_a_file_that_is_not_utf8_is_refused_and_nothing_is_stored(alice, team_a):
    data = jsonl(verl_rows(2)) + '{"prompt": "caf\u00e9", "ground_truth": "1"}\n'.encode("latin-1")
    answer = upload(alice, team_a, "latin", "latin.jsonl", data)
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert errors[0]["row"] == 3
    assert "UTF-8" in errors[0]["message"]
    assert_nothing_stored()


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_refused_and_nothing_is_stored(alice, team_a, settings):
    settings.EDGEPLANE_UPLOAD_MAX_BYTES = 100
    data = jsonl(verl_rows(10))
    answer = upload(alice, team_a, "big", "big.jsonl", data)
    # cut off while it streams, at the limit (test_upload_limits.py: before the body, by role and size)
    assert answer.status_code == 413
    assert answer.json()["limit_bytes"] == 100
    assert "over the limit of 100 bytes" in answer.json()["detail"]
    assert_nothing_stored()


@pytest.mark.django_db
def test_a_second_dataset_with_the_same_name_is_refused(alice, team_a):
    assert upload(alice, team_a, "arith", "a.jsonl", jsonl(verl_rows(2))).status_code == 201
    answer = upload(alice, team_a, "arith", "b.jsonl", jsonl(verl_rows(3)))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "name"
    assert Dataset.objects.count() == 1


@pytest.mark.django_db
def test_missing_form_fields_are_named_in_the_same_error_shape(alice, team_a):
    answer = alice.post("/api/datasets/", {"team": team_a.slug}, format="multipart")
    assert answer.status_code == 400
    assert {(e["row"], e["field"]) for e in answer.json()["errors"]} == {(0, "name"), (0, "file")}
    assert_nothing_stored()


@pytest.mark.django_db
def test_an_unknown_file_format_is_refused(alice, team_a):
    answer = upload(alice, team_a, "x", "x.txt", b"hello")
    assert answer.status_code == 400
    assert ".jsonl" in answer.json()["errors"][0]["message"]
    assert_nothing_stored()
