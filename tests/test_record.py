"""The step record: built once from the pipeline, one NaN convention, read back from the wire."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.selection.simulated import simulate
from workers.record import (
    RECORD_VERSION,
    DecisionRecord,
    EvaluationRecord,
    Observation,
    RecordError,
    StepRecord,
    StepSummary,
    TrainStats,
    finite,
)

TRAIN = {"reward_mean": np.float32(0.5), "response_length_mean": 7.0, "loss": float("nan"), "grad_norm": np.inf,
         "clip_fraction": 0.1, "entropy_mean": None, "approx_kl": np.float64(0.01), "device_seconds_total": 3.0}


def pipeline_records(methods=("greso", "lze"), steps=4) -> list[StepRecord]:
    _, results, _ = simulate(methods, steps, batch_size=4, group_size=4, n_prompts=24)
    return [StepRecord.from_result(r, train=TRAIN) for r, _ in results]


def test_the_one_helper_turns_nan_infinity_and_numpy_into_finite_floats_or_none():
    assert finite(float("nan")) is None and finite(float("-inf")) is None and finite(None) is None
    assert finite(np.float32(0.25)) == 0.25 and type(finite(np.int64(3))) is float
    with pytest.raises(RecordError, match="expected a number"):
        finite("NaN")


def test_a_pipeline_step_becomes_a_record_with_no_nan_anywhere():
    records = pipeline_records()
    first = records[0]
    assert first.summary.train.loss is None and first.summary.train.grad_norm is None  # NaN and inf: not measured
    assert first.summary.train.reward_mean == 0.5
    assert first.summary.mixed_rate_uniform is None or math.isfinite(first.summary.mixed_rate_uniform)
    assert any(o.prompt_entropy is None for r in records for o in r.observations)  # GRESO measures none
    assert any(d.method == "greso" for r in records for d in r.decisions)
    for record in records:
        text = json.dumps(record.to_wire(), allow_nan=False)  # would raise on NaN
        assert "NaN" not in text


def test_a_record_read_back_from_its_wire_form_is_the_same_record():
    for record in pipeline_records({"hive": {}, "hora": {"n0": 2}, "rlzvp": {},
                                    "lze": {"backward": False, "prune": True}}, steps=6):
        wire = json.loads(json.dumps(record.to_wire(), allow_nan=False))
        assert wire["version"] == RECORD_VERSION
        assert StepRecord.from_wire(wire) == record


numbers = st.one_of(st.none(), st.floats(-1e6, 1e6, width=32))
shares = st.one_of(st.none(), st.floats(0, 1))
savings = st.one_of(st.none(), st.floats(-1e12, 1))
raw = st.one_of(numbers, st.just(float("nan")), st.just(float("inf")))
norms = st.one_of(st.none(), st.floats(0, 1e6), st.just(float("nan")), st.just(float("inf")))
names = st.text(st.characters(codec="ascii", categories=["Ll"]), min_size=1, max_size=8)


@st.composite
def step_records(draw) -> StepRecord:
    counts = {name: draw(st.integers(0, 10_000)) for name in (
        "rollouts_generated", "tokens_generated", "rollouts_effective", "rollouts_trained", "rollouts_uniform",
        "groups_generated", "groups_all_correct", "groups_all_wrong", "groups_trained", "forward_tokens_extra",
        "backward_tokens", "parameters", "groups_uniform")}
    figures = {"rollout_savings": draw(st.floats(-1e12, 1)), "effective_share_of_generated": draw(st.floats(0, 1)),
               "flops_estimate": draw(st.floats(0, 1e24)), "flops_uniform_estimate": draw(st.floats(0, 1e24)),
               "device_seconds": draw(st.floats(0, 1e6))}
    summary = StepSummary(
        **counts, **figures, mixed_rate_uniform=draw(shares), backward_savings_vs_mixed=draw(savings),
        seconds=draw(st.dictionaries(names, st.floats(0, 1e6), max_size=3)),
        metrics={k: finite(v) for k, v in draw(st.dictionaries(names, raw, max_size=4)).items()},
        train=TrainStats.measured(draw(st.fixed_dictionaries({}, optional={"loss": raw, "grad_norm": norms}))),
    )
    group = draw(st.integers(1, 8))
    observations = tuple(
        Observation(prompt_key=key, group_size=group, successes=(wins := draw(st.integers(0, group))),
                    pass_rate=wins / group, response_entropy=draw(numbers), prompt_entropy=None,
                    energy=draw(numbers), trained=draw(st.booleans()), bucket="edge")
        for key in draw(st.lists(names, max_size=4, unique=True)))
    decisions = tuple(
        DecisionRecord(step=3, prompt_key=key, layer="pre_rollout", method="greso", action="skipped",
                       reason="greso.easy_skipped", scores={"draw": draw(numbers)}, message="skipped")
        for key in draw(st.lists(names, max_size=3, unique=True)))
    return StepRecord(step=3, epoch=draw(st.integers(0, 5)), summary=summary, observations=observations,
                      decisions=decisions, alerts=tuple(draw(st.lists(names, max_size=2))))


@settings(max_examples=150, deadline=None)
@given(step_records())
def test_any_record_survives_the_wire_unchanged(record):
    for version in (2, RECORD_VERSION):  # rows, and columns
        wire = json.loads(json.dumps(record.to_wire(version), allow_nan=False))
        assert StepRecord.from_wire(wire) == record


def test_a_record_of_another_version_is_refused_naming_both_versions():
    wire = pipeline_records(steps=1)[0].to_wire()
    with pytest.raises(RecordError) as refused:
        StepRecord.from_wire({**wire, "version": RECORD_VERSION + 1})
    assert f"version {RECORD_VERSION + 1}" in str(refused.value) and f"current {RECORD_VERSION}" in str(refused.value)
    with pytest.raises(RecordError, match="version 'two'"):
        StepRecord.from_wire({**wire, "version": "two"})


def test_an_unversioned_record_is_read_as_version_1_with_nan_as_a_string():
    record = pipeline_records(steps=1)[0]
    old = record.to_wire(version=2)
    del old["version"]
    old["summary"]["step"] = record.step  # version 1 repeated the step in the summary
    old["summary"]["mixed_rate_uniform"] = "NaN"
    old["observations"][0]["prompt_entropy"] = "NaN"
    read = StepRecord.from_wire(old)
    assert read.summary.mixed_rate_uniform is None and read.observations[0].prompt_entropy is None
    # version 2 refuses both: the summary has no step, and a number is a number or null
    v2 = {**old, "version": 2}
    with pytest.raises(RecordError, match=r"summary: unknown field\(s\) step"):
        StepRecord.from_wire(v2)
    v2["summary"] = {k: v for k, v in old["summary"].items() if k != "step"}
    with pytest.raises(RecordError, match=r"mixed_rate_uniform must be a finite number or null in \[0, 1\], got 'NaN'"):
        StepRecord.from_wire(v2)


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda w: w.pop("summary"), "record: a step record needs step and summary (lacks summary)"),
    (lambda w: w["summary"].pop("device_seconds"), "summary: lacks device_seconds"),
    (lambda w: w["summary"].update(rollouts_generated=-1),
     "rollouts_generated must be a whole number in [0, 2147483647], got -1"),
    (lambda w: w["summary"]["train"].update(loss="0.1"), "summary.train: loss must be a finite number or null in"),
    (lambda w: w["summary"]["train"].update(lr=0.1), "summary.train: unknown field(s) lr"),
    (lambda w: w["observations"][0].pop("bucket"), "observations[0]: lacks bucket"),
    (lambda w: w["observations"][0].update(bucket="lukewarm"), "bucket 'lukewarm' is not one of"),
    (lambda w: w["observations"][0].update(pass_rate=1.5), "pass_rate must be a finite number in [0, 1]"),
    (lambda w: w["decisions"][0].update(action="exploded"), "action 'exploded' is not one of"),
    (lambda w: w.update(step=-1), "record: step must be a whole number in [0, 10000000], got -1"),
    (lambda w: w.update(alerts="oops"), "alerts: must be a list"),
])
def test_a_malformed_wire_record_is_refused_saying_what_is_wrong(breakage, message):
    wire = pipeline_records(steps=1)[0].to_wire(version=2)
    breakage(wire)
    with pytest.raises(RecordError) as refused:
        StepRecord.from_wire(wire)
    assert message in str(refused.value)


def _set(column: list, value) -> None:
    column[1] = value


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda w: w["observations"].pop("bucket"), "observations: lacks column(s) bucket"),
    (lambda w: w["observations"].update(bucket="edge"), "observations: column bucket must be a list, got str"),
    (lambda w: w["observations"].update(colour=[]), "observations: unknown field(s) colour"),
    (lambda w: w["observations"]["bucket"].pop(), "observations: columns differ in length"),
    (lambda w: _set(w["observations"]["bucket"], "lukewarm"), "bucket 'lukewarm' is not one of"),
    (lambda w: _set(w["observations"]["pass_rate"], 1.5), "pass_rate must be a finite number in [0, 1]"),
    (lambda w: _set(w["observations"]["pass_rate"], "0.5"), "pass_rate must be a finite number in [0, 1]"),
    (lambda w: _set(w["observations"]["successes"], 10**6), "successes must be a whole number in [0, group_size]"),
    (lambda w: _set(w["observations"]["group_size"], 2.5), "group_size must be a whole number"),
    (lambda w: _set(w["observations"]["trained"], 1), "trained must be true or false"),
    (lambda w: _set(w["observations"]["prompt_entropy"], 1e300), "prompt_entropy must be a finite number or null"),
    (lambda w: _set(w["observations"]["prompt_key"], "a\x00b"), "prompt_key must not contain a NUL character"),
    (lambda w: _set(w["observations"]["prompt_key"], "x" * 256), "prompt_key must be at most 255 characters"),
    (lambda w: _set(w["observations"]["prompt_key"], w["observations"]["prompt_key"][0]), "is observed 2 times"),
    (lambda w: _set(w["decisions"]["action"], "exploded"), "action 'exploded' is not one of"),
    (lambda w: _set(w["decisions"]["method"], "m" * 17), "method must be at most 16 characters"),
    (lambda w: _set(w["decisions"]["message"], None), "message must be a string"),
    (lambda w: w["decisions"].update(scores={"x": [1.0]}), "scores column 'x' must be a list of"),
    (lambda w: w["decisions"].update(scores={"x": ["high"] * len(w["decisions"]["action"])}),
     "scores['x'] must be a finite number or null"),
    (lambda w: w["decisions"].update(scores=[]), "decisions.scores: must be an object"),
])
def test_a_malformed_column_record_is_refused_naming_the_row_and_rule(breakage, message):
    wire = json.loads(json.dumps(pipeline_records(steps=1)[0].to_wire()))
    assert wire["version"] == 3 and len(wire["observations"]["bucket"]) > 1 and len(wire["decisions"]["action"]) > 1
    breakage(wire)
    with pytest.raises(RecordError) as refused:
        StepRecord.from_wire(wire)
    assert message in str(refused.value)


def test_a_record_built_in_process_obeys_the_same_rules():
    record = pipeline_records(steps=1)[0]
    with pytest.raises(RecordError, match="pass_rate must be a finite number in"):
        dataclasses.replace(record.observations[0], pass_rate=float("nan"))
    with pytest.raises(RecordError, match="loss must be a finite number or null"):
        TrainStats(loss=float("nan"))  # NaN enters only through finite(): TrainStats.measured
    with pytest.raises(RecordError, match="must be a tuple of Observation"):
        dataclasses.replace(record, observations=[o.to_wire() for o in record.observations])


def test_an_evaluation_keeps_what_else_the_engine_reports_and_nulls_its_nan():
    record = EvaluationRecord.measured({"step": 2, "k": 4, "pass_at_1": np.float64(0.5), "pass_at_k": 0.75,
                                        "prompts": 8, "by_difficulty": {"3": {"pass_at_1": float("nan")}},
                                        "seconds": 1.5})
    assert record.by_difficulty == {"3": {"pass_at_1": None}} and record.extra == {"seconds": 1.5}
    assert EvaluationRecord.from_wire(json.loads(json.dumps(record.to_wire()))) == record
    with pytest.raises(RecordError, match=r"k must be a whole number in \[1, 2147483647\], got 0"):
        EvaluationRecord.from_wire({**record.to_wire(), "k": 0})


# -- the heartbeat's warm-up progress ------------------------------------------------------------------------
def test_a_warmup_heartbeat_carries_its_progress_on_the_wire_and_others_carry_none():
    from workers.record import Heartbeat

    read = Heartbeat.from_wire({"event": "heartbeat", "phase": "warmup", "detail": "d", "device_seconds": 2.5,
                                "warmup_step": 1200, "warmup_steps": 4900})
    assert (read.warmup_step, read.warmup_steps, read.device_seconds) == (1200, 4900, 2.5)
    plain = Heartbeat.from_wire({"phase": "keepalive", "detail": "alive"})
    assert plain.warmup_step is None and plain.warmup_steps is None
    assert Heartbeat(phase="warmup", detail="", warmup_step=0, warmup_steps=1).warmup_step == 0  # not begun yet
    assert Heartbeat(phase="warmup", detail="", warmup_step=7, warmup_steps=7).warmup_step == 7  # all done


@pytest.mark.parametrize(("step", "steps"), [(True, 5), (1, True), (1, 5.0), (6, 5), (None, 5), (1, None), (1, 0),
                                             (-1, 5), (1, 10_000_001)])
def test_a_heartbeat_refuses_progress_out_of_its_range(step, steps):
    from workers.record import Heartbeat

    with pytest.raises(RecordError, match="warmup_step"):
        Heartbeat(phase="warmup", detail="", warmup_step=step, warmup_steps=steps)
