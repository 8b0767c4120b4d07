"""Every problem of a run config at once (RunConfig.problems, Pipeline.problems,
MethodParams.problems): each conflicting pair of methods, several problems of several kinds in
one answer, every parameter out of range, the defaults never in conflict, and fixes that follow
the state they speak of."""

from __future__ import annotations

import itertools

import pytest

from workers.engines.config import ConfigError, RunConfig
from workers.selection.methods import BUILTIN
from workers.selection.params import SelectionConfigError
from workers.selection.pipeline import Pipeline
from workers.selection.registry import REGISTRY

NAMES = [m.name for m in BUILTIN]
# The pairs of built-in methods that cannot run together with their default parameters, and a
# word of the fix each names (docs/algorithms.md: one advantage, one history filter, no
# zero-variance filter or backward selection under RL-ZVP).
CONFLICTS = {
    frozenset({"grpo", "rlzvp"}): "drop grpo",
    frozenset({"dapo", "rlzvp"}): "choose one of them",
    frozenset({"greso", "hive"}): "keep one of them",
    frozenset({"lze", "rlzvp"}): "drop lze or rlzvp",
}


# HORA's own default probe (8, SELECTORS.md's, of N = 32) leaves nothing to allocate at the
# default N = 8: the compositions below give it the new-run form's start, a quarter of N.
AT_DEFAULT_N = {"hora": {"n0": 2}}


def alone(name: str) -> dict:
    return dict(AT_DEFAULT_N.get(name, {}))


def messages(values: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for error in RunConfig.problems(values):
        out.setdefault(error.field, []).append(error.message)
    return out


@pytest.mark.parametrize("pair", list(itertools.combinations(NAMES, 2)), ids="+".join)
def test_each_pair_of_methods_composes_or_is_refused_with_its_fix(pair):
    problems = RunConfig.problems({"selectors": {key: alone(key) for key in pair}})
    fix = CONFLICTS.get(frozenset(pair))
    if fix is None:
        assert problems == [], problems
    else:
        assert len(problems) == 1 and fix in problems[0].message, problems


def test_every_conflicting_pair_is_reported_in_one_answer():
    every = {"selectors": {key: alone(key) for key in NAMES}}  # all seven at once: all four conflicts
    said = [e.message for e in RunConfig.problems(every)]
    for pair, fix in CONFLICTS.items():
        assert any(fix in m and all(n in m for n in pair) for m in said), (pair, said)
    with pytest.raises(ConfigError) as refused:  # the API path: the same list, raised
        RunConfig.from_mapping(every)
    assert [str(e) for e in refused.value.errors] == [str(e) for e in RunConfig.problems(every)]
    with pytest.raises(SelectionConfigError) as composed:  # the pipeline lists them too
        Pipeline({key: alone(key) for key in NAMES}, batch_size=8, group_size=8)
    assert len(composed.value.problems) == len(CONFLICTS)


def test_several_problems_of_several_kinds_come_together():
    found = messages({
        "batch_size": 0, "steps": "many", "lr": 5.0, "stpes": 3,  # ranges, kinds, an unknown field
        "selectors": {
            "grpo": {}, "rlzvp": {"alpha": 99},  # a conflict and a parameter out of range
            "hora": {"n0": 0, "shards": 0},  # two bad parameters of one method
            "lze": {"kappa": 2.0, "bogus": 1},  # an out-of-range and an unknown parameter
            "nosuch": {},  # an unknown method
        },
    })
    assert set(found) >= {"batch_size", "steps", "lr", "stpes", "selectors", "selectors.rlzvp.alpha",
                          "selectors.hora.n0", "selectors.hora.shards", "selectors.lze.kappa",
                          "selectors.lze.bogus", "selectors.lze.backward"}, found
    assert any("unknown method 'nosuch'" in m for m in found["selectors"])
    assert any("grpo and rlzvp both set the advantage" in m for m in found["selectors"])
    assert "must be <= 10, got 99" in found["selectors.rlzvp.alpha"][0]
    assert "unknown parameter; lze takes" in found["selectors.lze.bogus"][0]
    # LZE's conflict with RL-ZVP is judged with its usable parameters, beside the refused kappa
    assert "rlzvp would shape nothing" in found["selectors.lze.backward"][0]


def test_two_problems_on_one_field_are_both_said():
    found = messages({"selectors": {"grpo": {}, "rlzvp": {}, "dapo": {}}})
    assert len(found["selectors"]) == 2, found


RANGED = [(m.name, f) for m in BUILTIN for f in m.Params.describe() if f["range"] is not None]


@pytest.mark.parametrize(("method", "param"), RANGED, ids=lambda v: v if isinstance(v, str) else v["name"])
def test_every_parameter_out_of_range_is_refused_with_its_range(method, param):
    low, high = param["range"]
    for value, word in ((high + 1, "<="), (low - 1, ">=")):
        found = messages({"batch_size": 64, "group_size": 64, "selectors": {method: {param["name"]: value}}})
        said = found.get(f"selectors.{method}.{param['name']}", [])
        assert said and word in said[0] and "range [" in said[0], (value, found)


def test_every_bad_parameter_of_one_method_is_said():
    params = {f["name"]: f["range"][1] * 2 + 1 for f in REGISTRY["hive"].Params.describe() if f["range"]}
    found = messages({"selectors": {"hive": params}})
    assert {f"selectors.hive.{name}" for name in params} <= set(found), found


def test_the_defaults_never_conflict():
    assert RunConfig.problems({}) == []
    default = RunConfig.from_mapping({})
    for engine, device in (("local", "auto"), ("verl", "cpu")):
        assert RunConfig.problems({"engine": engine, "device": device, "selectors": default.selectors}) == []
        for name in NAMES:  # each method alone, with its defaults, at the default B and N
            alone = {"engine": engine, "device": device, "selectors": {name: {}}}
            if name != "hora":
                assert RunConfig.problems(alone) == [], name
                continue
            # HORA's default probe is SELECTORS.md's (8 of N = 32): at N = 32 it composes; at the
            # default N = 8 the one problem is the probe's, and it names the fix.
            assert RunConfig.problems({**alone, "group_size": 32}) == []
            [problem] = RunConfig.problems(alone)
            assert problem.field == "selectors.hora.n0" and "lower hora.n0 or raise N" in problem.message


# -- fixes that follow the state ------------------------------------------------------------------------------

def test_lzes_fix_for_rlzvp_follows_whether_its_pruner_is_on():
    off = messages({"selectors": {"lze": {}, "rlzvp": {}}})["selectors.lze.backward"][0]
    assert "keep" not in off and "turn LZE's pruner on (lze.prune = true) and set lze.backward = false" in off
    on = messages({"selectors": {"lze": {"prune": True}, "rlzvp": {}}})["selectors.lze.backward"][0]
    assert "set lze.backward = false (LZE keeps its pruner)" in on and "turn LZE's pruner on" not in on
    # and each fix works: following it leaves no problem
    assert messages({"selectors": {"lze": {"prune": True, "backward": False}, "rlzvp": {}}}) == {}
    nothing = messages({"selectors": {"lze": {"backward": False}}})["selectors.lze.backward"][0]
    assert "LZE does nothing" in nothing and "lze.prune = true" in nothing


def test_hives_band_message_says_when_the_gate_is_not_band():
    band = messages({"selectors": {"hive": {"gate": "band", "k_off": 0.6, "k_keep": 0.6}}})["selectors.hive.k_off"]
    median = messages({"selectors": {"hive": {"gate": "median", "k_off": 0.6, "k_keep": 0.6}}})
    assert "k_off + k_keep must be <= 1" in band[0] and "act only with gate = band" not in band[0]
    assert "act only with gate = band; this run's gate is median" in median["selectors.hive.k_off"][0]


def test_horas_probe_fix_names_the_run_n():
    said = messages({"group_size": 4, "selectors": {"hora": {"n0": 4}}})["selectors.hora.n0"][0]
    assert "smaller than N = 4" in said and "lower hora.n0 or raise N" in said


def test_verl_refusals_come_at_validation():
    said = messages({"engine": "verl", "device": "cpu", "group_size": 4, "selectors": {"hora": {"n0": 2}, "dapo": {}}})
    assert "hora with dapo's zero-variance post-filter" in said["selectors"][0]
    assert messages({"engine": "local", "group_size": 4, "selectors": {"hora": {"n0": 2}, "dapo": {}}}) == {}
