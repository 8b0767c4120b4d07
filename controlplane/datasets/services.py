"""Dataset import: one service for every format, one transaction, nothing half-written."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction

from controlplane.accounts.models import Team
from controlplane.datasets.models import Dataset, Prompt
from workers.problems.dataset import DatasetError, PromptRecord, read_dataset_bytes

log = logging.getLogger(__name__)


class DatasetImportError(ValueError):
    """The file cannot become a dataset; ``errors`` lists {row, field, message}."""

    def __init__(self, errors: list[dict]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"row {e['row']}, field {e['field']}: {e['message']}" for e in errors[:5]))


def dataset_import(*, team: Team, name: str, filename: str, data: bytes, user=None) -> Dataset:
    """Parse and store a JSONL, CSV or Parquet file (verl's format included), within the
    limits of docs/limits.md (rows, decoded size, prompt and answer length: DatasetLimits)."""
    _check_name(team, name)
    if len(filename) > Dataset._meta.get_field("source_filename").max_length:
        raise DatasetImportError([{"row": 0, "field": "file", "message": "the file name is longer than 255 "
                                   "characters: rename the file"}])
    try:
        records = read_dataset_bytes(data, filename, max_bytes=settings.EDGEPLANE_UPLOAD_MAX_BYTES)
    except DatasetError as exc:
        raise DatasetImportError(exc.errors) from exc
    return dataset_store(team=team, name=name, filename=filename, records=records,
                         content_hash=hashlib.sha256(data).hexdigest(), user=user)


def _check_name(team: Team, name: str) -> None:
    if not name.strip():
        raise DatasetImportError([{"row": 0, "field": "name", "message": "give the dataset a name"}])
    longest = Dataset._meta.get_field("name").max_length
    if len(name) > longest:
        raise DatasetImportError([{"row": 0, "field": "name",
                                   "message": f"{len(name)} characters, over the limit of {longest}: choose a "
                                              "shorter name"}])
    if Dataset.objects.filter(team=team, name=name).exists():
        raise DatasetImportError([{"row": 0, "field": "name",
                                   "message": f"the team already has a dataset named {name!r}: choose another name"}])


@transaction.atomic
def dataset_store(*, team: Team, name: str, filename: str, records: list[PromptRecord], content_hash: str,
                  user=None) -> Dataset:
    dataset = Dataset.objects.create(team=team, name=name, source_filename=filename, content_hash=content_hash,
                                     prompt_count=len(records), created_by=user)
    Prompt.objects.bulk_create(
        [Prompt(dataset=dataset, key=r.key, prompt=r.prompt, ground_truth=r.ground_truth, data_source=r.data_source,
                index=r.index, difficulty=r.difficulty, split=r.split, extra_info=r.extra_info) for r in records],
        batch_size=2000,
    )
    return dataset


def dataset_import_builtin(*, team: Team, task: str, seed: int = 0, n_train: int = 2000, n_test: int = 200,
                           name: str | None = None, user=None) -> Dataset:
    """A built-in task (train and test splits) as a dataset of the team."""
    from workers.problems.arithmetic import builtin_task

    name = name or f"{task}-{seed}"
    _check_name(team, name)
    splits = builtin_task(task, seed=seed, n_train=n_train, n_test=n_test)
    records = splits.test + splits.train
    digest = hashlib.sha256(json.dumps([[r.key, r.ground_truth] for r in records]).encode()).hexdigest()
    return dataset_store(team=team, name=name, filename=f"builtin:{task}", records=records,
                         content_hash=digest, user=user)


def dataset_export(*, dataset: Dataset, folder: Path) -> tuple[Path, Path | None]:
    """Write the dataset as JSONL files the engines read: (train, held-out or None).

    Prompts whose split is "test" form the held-out file; everything else trains.
    """
    folder.mkdir(parents=True, exist_ok=True)
    train_path, test_path = folder / "train.jsonl", folder / "test.jsonl"
    counts = {"train": 0, "test": 0}
    with train_path.open("w", encoding="utf-8") as train, test_path.open("w", encoding="utf-8") as test:
        for p in dataset.prompts.order_by("id").iterator(chunk_size=2000):
            row = {"key": p.key, "prompt": p.prompt, "reward_model": {"ground_truth": p.ground_truth},
                   "data_source": p.data_source, "extra_info": {**p.extra_info, "index": p.index,
                                                               "difficulty": p.difficulty, "split": p.split}}
            target = "test" if p.split == "test" else "train"
            (test if target == "test" else train).write(json.dumps(row) + "\n")
            counts[target] += 1
    if counts["train"] == 0:
        raise DatasetImportError([{"row": 0, "field": "split", "message": "the dataset has no training prompts"}])
    if counts["test"] == 0:
        test_path.unlink()
        return train_path, None
    return train_path, test_path


class DatasetInUse(Exception):
    """A dataset that runs use cannot be deleted: their prompt pages, audit trail and relaunches
    read its prompts. ``runs`` holds the names of a few of them."""

    def __init__(self, count: int, runs: list[str]) -> None:
        self.count = count
        self.runs = runs
        named = ", ".join(runs) + (f" and {count - len(runs)} more" if count > len(runs) else "")
        noun = "run uses" if count == 1 else "runs use"
        super().__init__(f"{count} {noun} this dataset ({named}): it is kept so that their prompts, prompt pages and "
                         "audit trail stay readable. A dataset no run uses can be deleted.")


@transaction.atomic
def dataset_delete(*, dataset: Dataset, by=None) -> None:
    """Delete a dataset and its prompts, unless a run uses it (DatasetInUse: a run's data outlives
    the wish to tidy up; the runs' foreign key protects it too)."""
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)  # a launch using it waits, or we do
    runs = dataset.runs.order_by("-id")
    count = runs.count()
    if count:
        raise DatasetInUse(count, list(runs.values_list("name", flat=True)[:3]))
    name, team = dataset.name, dataset.team.slug
    dataset.prompts.all().delete()
    dataset.delete()
    log.info("dataset deleted: team=%s name=%s by=%s", team, name, getattr(by, "username", None))
