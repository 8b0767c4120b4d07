"""``json_depth_over``, which every JSON body passes (the ingest's records included), against a
recursive reference on random values: nested lists and objects of every scalar type, containers
placed after long runs of scalars (the shortcut that passes over all-scalar members must not
skip them), dict and list subclasses, and values that are not JSON types at all."""

from __future__ import annotations

import random
from collections import OrderedDict, UserString
from typing import Any

import pytest

from controlplane.api.parsers import MAX_JSON_DEPTH, json_depth_over, json_loads_bounded


class Tagged(list):
    """A list subclass: counted as a list, as isinstance counts it."""


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


SCALARS = [lambda r: r.randint(-5, 5), lambda r: r.random(), lambda r: "s" * r.randint(0, 3), lambda r: None,
           lambda r: r.random() < 0.5, lambda r: UserString("u"), lambda r: (1, [2])]


def random_value(r: random.Random, levels: int) -> Any:
    if levels == 0 or r.random() < 0.3:
        return r.choice(SCALARS)(r)
    members = [r.choice(SCALARS)(r) for _ in range(r.choice([0, 1, 3, 50]))]
    for _ in range(r.randint(0, 2)):  # containers among (often after) the scalars
        members.insert(r.randint(0, len(members)), random_value(r, levels - 1))
    kind = r.choice(["list", "dict", "ordered", "tagged"])
    if kind == "list":
        return members
    if kind == "tagged":
        return Tagged(members)
    pairs = [(f"k{i}", m) for i, m in enumerate(members)]
    return dict(pairs) if kind == "dict" else OrderedDict(pairs)


@pytest.mark.parametrize("seed", range(40))
def test_json_depth_over_agrees_with_a_recursive_count_on_random_values(seed):
    r = random.Random(seed)
    for _ in range(50):
        value = random_value(r, r.randint(0, 9))
        actual = depth(value)
        for limit in range(11):
            assert json_depth_over(value, limit) == (actual > limit), (seed, limit, actual)


def test_a_deep_list_after_a_long_column_of_numbers_is_found():
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH - 2):
        deep = [deep]
    # Three levels above it (the body, its observations, their scores): one level over the limit.
    body = {"observations": {"step": list(range(100_000)), "scores": [0.5] * 100_000 + [deep]}}
    assert json_depth_over(body, MAX_JSON_DEPTH)
    body["observations"]["scores"][-1] = deep[0]
    assert not json_depth_over(body, MAX_JSON_DEPTH)
    with pytest.raises(ValueError, match="nested deeper"):
        json_loads_bounded("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
