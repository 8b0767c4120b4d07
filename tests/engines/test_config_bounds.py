"""Every numeric field of RunConfig and of every built-in method's parameters has a range,
enforced by from_mapping with a message naming the field, the value and the range; the
ranges in docs/limits.md are the code's own. Parametrised over the fields by introspection:
a new numeric field without a range fails here."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from workers.engines.config import ConfigError, RunConfig, ranges_markdown
from workers.selection.methods import BUILTIN
from workers.selection.params import SelectionConfigError, field_kind, format_bounds

DOCS = Path(__file__).resolve().parents[2] / "docs" / "limits.md"
NUMERIC = ("int", "float")

# Cross-field rules a bound alone would trip: the companions that make the bound itself valid.
COMPANIONS = {
    ("model_heads", 32): {"model_dim": 64},
    ("minibatches", 8192): {"batch_size": 8192},
    ("hive.k_off", 0.99): {"k_keep": 0.01},
    ("hive.k_keep", 1): {"k_off": 0.0},
}

RUN_FIELDS = [f for f in dataclasses.fields(RunConfig) if field_kind(f.type) in NUMERIC]
METHOD_FIELDS = [(m, f) for m in BUILTIN for f in dataclasses.fields(m.Params) if field_kind(f.type) in NUMERIC]


def run_error(values):
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_mapping(values)
    return caught.value.as_dict()


def outside(bounds, kind):
    lo, hi = bounds
    if kind == "int":
        return [lo - 1, hi + 1]
    return [math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)]


def wrong_kinds(kind):
    return [math.nan, math.inf, -math.inf, "NaN", "Infinity", "1e400", 10**400, -(10**400), True, False, None, [1],
            {"a": 1}] + ([1.5, "3"] if kind == "int" else [])


@pytest.mark.parametrize("f", RUN_FIELDS, ids=lambda f: f.name)
def test_every_run_config_number_has_a_range_and_both_ends_are_accepted(f):
    bounds = f.metadata.get("range")
    assert bounds is not None, f"RunConfig.{f.name} has no range: give it bounds=(min, max) in _help"
    for value in bounds:
        value = int(value) if field_kind(f.type) == "int" else float(value)
        config = RunConfig.from_mapping({f.name: value, **COMPANIONS.get((f.name, value), {})})
        assert getattr(config, f.name) == value


@pytest.mark.parametrize("f", RUN_FIELDS, ids=lambda f: f.name)
def test_every_run_config_number_outside_its_range_is_refused_naming_field_value_and_range(f):
    kind, bounds = field_kind(f.type), f.metadata["range"]
    for value in outside(bounds, kind):
        errors = run_error({f.name: value})
        assert list(errors) == [f.name]
        assert format_bounds(bounds) in errors[f.name][0] and repr(value) in errors[f.name][0]


@pytest.mark.parametrize("f", RUN_FIELDS, ids=lambda f: f.name)
def test_nan_infinity_bools_lists_and_mappings_are_not_numbers(f):
    kind = field_kind(f.type)
    for value in wrong_kinds(kind):
        errors = run_error({f.name: value})
        assert list(errors) == [f.name], value
        assert format_bounds(f.metadata["range"]) in errors[f.name][0]


@pytest.mark.parametrize(("method", "f"), METHOD_FIELDS, ids=lambda x: getattr(x, "name", ""))
def test_every_method_parameter_has_a_range_enforced_at_both_ends(method, f):
    bounds = f.metadata.get("range")
    assert bounds is not None, f"{method.name}.{f.name} has no range: give it bounds=(min, max) in described"
    kind = field_kind(f.type)
    for value in bounds:
        value = int(value) if kind == "int" else float(value)
        params = method.Params.from_mapping({f.name: value, **COMPANIONS.get((f"{method.name}.{f.name}", value), {})})
        assert getattr(params, f.name) == value
    for value in outside(bounds, kind) + wrong_kinds(kind):
        with pytest.raises(SelectionConfigError) as caught:
            method.Params.from_mapping({f.name: value})
        assert caught.value.field == f"{method.name}.{f.name}"
        assert format_bounds(bounds) in caught.value.message, value


def test_a_method_parameter_out_of_range_is_a_config_error_under_selectors():
    errors = run_error({"selectors": {"hora": {"n0": 10**9}}, "group_size": 8})
    assert errors == {"selectors.hora.n0": ["must be <= 1024, got 1000000000 (range [1, 1024])"]}
    errors = run_error({"selectors": {"rlzvp": {"alpha": "Infinity"}}})
    assert "finite" in errors["selectors.rlzvp.alpha"][0]
    errors = run_error({"selectors": {"greso": {"post_filter": ["on"]}}})
    assert "must be text" in errors["selectors.greso.post_filter"][0]


def test_text_and_list_fields_are_bounded_too():
    assert "at most 1024 characters" in run_error({"task": "x" * 5000})["task"][0]
    assert "at most 32 entries" in run_error({"task_levels": list(range(1, 40))})["task_levels"][0]
    assert "[1, 64]" in run_error({"task_levels": [10**12]})["task_levels"][0]
    assert "..." in run_error({"steps": list(range(1000))})["steps"][0]  # a refused value is echoed short


def test_a_config_built_in_code_is_checked_against_the_same_ranges():
    with pytest.raises(ConfigError) as caught:
        RunConfig(max_new_tokens=10**9, lr=math.nan).validate()
    assert {"max_new_tokens", "lr"} <= set(caught.value.as_dict())


def test_the_documented_ranges_are_the_code_s():
    text = DOCS.read_text(encoding="utf-8")
    start, end = "<!-- ranges:start -->\n", "\n<!-- ranges:end -->"
    assert start in text and end in text, "docs/limits.md lost its ranges markers"
    documented = text.split(start, 1)[1].split(end, 1)[0]
    assert documented == ranges_markdown(), (
        "docs/limits.md is out of date: paste the output of\n  python -c 'from workers.engines.config import "
        "ranges_markdown; print(ranges_markdown())'\nbetween its ranges markers")
