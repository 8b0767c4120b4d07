"""Candidate prompts for pre-rollout selection inside verl: rows of verl's dataloader by stable key.

verl's V1 trainer draws a ``gen_batch_size`` chunk of prompts at a time
(``_fetch_one_gen_batch``: a TensorDict of dataset rows, each with a fresh ``uid``). Selection
needs more than that: a candidate that passed the filters but was not needed this round goes
back and is rolled out first next time, and LZE's replays and a resumed run's carried-over
candidates are rebuilt from their keys. ``PromptPool`` holds rows by the stable prompt key
(the ``key`` column of the launcher's parquet export) in front of the dataloader. A row is
a reference into its dataloader chunk; rows become one TensorDict only when submitted
(one ``index_select`` per run of rows from the same chunk, not one per row).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import verl.utils.tensordict_utils as tu
from tensordict import TensorDict


@dataclass(frozen=True)
class RowRef:
    """Row ``index`` of a dataloader chunk."""

    batch: TensorDict
    index: int

    def field(self, name: str) -> Any:
        value = self.batch[name][self.index]
        return getattr(value, "data", value)


Row = tuple[str, RowRef]  # (stable prompt key, where the row is)


def row_keys(batch: TensorDict) -> list[str]:
    """Stable prompt keys of a dataloader batch: the ``key`` column, else ``extra_info.key``,
    else ``index:<extra_info.index>`` (a parquet not written by Edgeplane's export)."""
    if "key" in batch:
        return [str(k) for k in batch["key"]]
    keys = []
    for info in batch["extra_info"]:
        info = getattr(info, "data", info) or {}
        keys.append(str(info["key"]) if info.get("key") is not None else f"index:{info.get('index')}")
    return keys


def split_rows(batch: TensorDict) -> list[Row]:
    return [(key, RowRef(batch, i)) for i, key in enumerate(row_keys(batch))]


def join_rows(rows: Sequence[Row]) -> TensorDict:
    """The rows as one TensorDict, in order."""
    parts: list[tuple[TensorDict, list[int]]] = []
    for _, ref in rows:
        if parts and parts[-1][0] is ref.batch:
            parts[-1][1].append(ref.index)
        else:
            parts.append((ref.batch, [ref.index]))
    tds = [tu.index_select_tensor_dict(batch, indices) for batch, indices in parts]
    return tds[0] if len(tds) == 1 else tu.concat_tensordict(tds)


class PromptPool:
    """Rows given back or rebuilt go first; then the dataloader, one chunk at a time.

    ``fetch`` returns the next dataloader chunk (the trainer's ``_fetch_one_gen_batch``,
    which also opens a new epoch when the dataloader wraps); ``build`` makes a batch of
    dataset rows from indices; ``dataset_keys`` are the train dataset's keys in row order.
    """

    def __init__(self, fetch: Callable[[], TensorDict], build: Callable[[list[int]], TensorDict],
                 dataset_keys: Sequence[str]) -> None:
        self.fetch = fetch
        self.build = build
        self.index = {key: i for i, key in enumerate(dataset_keys)}
        self.front: deque[Row] = deque()

    def take(self, n: int, exclude: set[str] | None = None) -> list[Row]:
        """``n`` rows whose keys are not in ``exclude`` (nor repeated); a key met twice is kept
        for later, so one step never rolls out the same prompt as two groups."""
        exclude = set(exclude or ())
        taken: list[Row] = []
        later: list[Row] = []
        fetched = 0
        while len(taken) < n:
            if not self.front:
                if fetched > len(self.index) + n:  # every key met already: the dataset is too small
                    break
                rows = split_rows(self.fetch())
                fetched += len(rows)
                self.front.extend(rows)
                continue
            key, row = self.front.popleft()
            if key in exclude:
                later.append((key, row))
                continue
            exclude.add(key)
            taken.append((key, row))
        self.front.extendleft(reversed(later))
        return taken

    def put_back(self, rows: Sequence[Row]) -> None:
        """Rows to offer first next time, in this order."""
        self.front.extendleft(reversed(list(rows)))

    def rebuild(self, keys: Sequence[str]) -> list[Row]:
        """Fresh rows (new uids) for keys of the train dataset; unknown keys are skipped."""
        indices = [self.index[k] for k in keys if k in self.index]
        if not indices:
            return []
        return split_rows(self.build(indices))

    def pending_keys(self) -> list[str]:
        return [key for key, _ in self.front]
