"""Uploads within bounds: a small file that decodes to too much, an over-long prompt or CSV cell,
a name the database cannot hold: each a DatasetImportError in the row-error format, nothing
stored."""

from __future__ import annotations

import json

import pytest

from controlplane.datasets.models import Dataset, Prompt
from controlplane.datasets.services import DatasetImportError, dataset_import
from tests.problems.test_dataset_limits import chat_bomb  # the reader's tests generate the files


def refused(team, **kwargs) -> list[dict]:
    with pytest.raises(DatasetImportError) as caught:
        dataset_import(team=team, **{"name": "d", "filename": "d.jsonl", **kwargs})
    assert not Dataset.objects.exists() and not Prompt.objects.exists()
    assert all(set(e) == {"row", "field", "message"} for e in caught.value.errors)
    return caught.value.errors


def test_uploads_past_the_decoded_prompt_answer_and_cell_limits_store_nothing(acme):
    [error] = refused(acme, filename="bomb.parquet", data=chat_bomb(20_000, 300 * 1024))
    assert error["row"] == 0 and "decode to more than" in error["message"]
    [error] = refused(acme, data=(json.dumps({"key": "k", "prompt": "x" * 40_000, "answer": "1"}) + "\n").encode())
    assert (error["row"], error["field"]) == (1, "prompt") and "EDGEPLANE_DATASET_MAX_PROMPT_BYTES" in error["message"]
    [error] = refused(acme, filename="d.csv", data=("prompt,ground_truth\n" + "x" * 150_000 + ",1\n").encode())
    assert (error["row"], error["field"]) == (1, "file") and "longer than 131072" in error["message"]


def test_names_longer_than_their_columns_are_refused_not_a_database_error(acme):
    data = b'{"key": "k", "prompt": "q", "answer": "a"}\n'
    assert "over the limit of 200" in refused(acme, name="n" * 201, data=data)[0]["message"]
    assert "rename the file" in refused(acme, filename="f" * 300 + ".jsonl", data=data)[0]["message"]
    assert dataset_import(team=acme, name="n" * 200, filename="ok.jsonl", data=data).prompt_count == 1
