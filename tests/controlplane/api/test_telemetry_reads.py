"""What the dashboard polls: steps and evaluations after a cursor, decisions, prompt states."""

from __future__ import annotations

import pytest

from controlplane.telemetry.services import evaluation_ingest, step_ingest
from tests.controlplane.api.helpers import step_record
from workers.record import TRAIN_FIELDS


@pytest.mark.django_db
def test_steps_after_a_cursor_return_only_what_is_new(alice, running):
    url = f"/api/runs/{running.id}/steps/"
    empty = alice.get(url).json()
    assert empty["results"] == [] and empty["next_after"] == -1 and empty["status"] == "starting"

    for step in range(3):
        step_ingest(run_id=running.id, record=step_record(step, ["k0", "k1"]))
    first = alice.get(url).json()
    assert [s["step"] for s in first["results"]] == [0, 1, 2]
    assert first["next_after"] == 2 and first["has_more"] is False
    assert first["status"] == "running"
    assert first["results"][0]["rollouts_generated"] == 4
    assert first["results"][0]["train"] == {**dict.fromkeys(TRAIN_FIELDS), "reward_mean": 0.5, "loss": 0.1}

    assert alice.get(url, {"after": 2}).json()["results"] == []  # nothing new yet
    step_ingest(run_id=running.id, record=step_record(3, ["k0"]))
    new = alice.get(url, {"after": first["next_after"]}).json()
    assert [s["step"] for s in new["results"]] == [3] and new["next_after"] == 3
    assert alice.get(url, {"after": 1}).json()["next_after"] == 3
    assert alice.get(url, {"after": "x"}).status_code == 400


@pytest.mark.django_db
def test_evaluations_after_a_cursor_return_only_what_is_new(alice, running):
    url = f"/api/runs/{running.id}/evaluations/"
    for step in (0, 10, 20):
        evaluation_ingest(run_id=running.id, record={"step": step, "k": 4, "pass_at_1": step / 100,
                                                     "pass_at_k": step / 50, "prompts": 8})
    everything = alice.get(url).json()
    assert [e["step"] for e in everything["results"]] == [0, 10, 20] and everything["next_after"] == 20
    newer = alice.get(url, {"after": 10}).json()
    assert [e["step"] for e in newer["results"]] == [20]
    assert newer["results"][0]["pass_at_k"] == pytest.approx(0.4)


@pytest.fixture
def decisions_run(running):
    """Three steps: k0..k3 kept on step 0; k2, k3 skipped on steps 1 and 2."""
    step_ingest(run_id=running.id, record=step_record(0, ["k0", "k1", "k2", "k3"], successes=[2, 1, 2, 0]))
    step_ingest(run_id=running.id, record=step_record(1, ["k0", "k1"], skipped=["k2", "k3"], successes=[1, 1]))
    step_ingest(run_id=running.id, record=step_record(2, ["k0", "k1"], skipped=["k2", "k3"], successes=[2, 1]))
    return running


@pytest.mark.django_db
def test_decisions_filter_by_prompt_method_action_and_step(alice, decisions_run):
    url = f"/api/runs/{decisions_run.id}/decisions/"

    def rows(**query):
        return alice.get(url, query).json()["results"]

    assert len(rows()) == 12
    k2 = rows(prompt="k2")
    assert [(d["step"], d["action"]) for d in k2] == [(0, "kept"), (1, "skipped"), (2, "skipped")]
    assert set(k2[1]) == {"id", "step", "prompt_key", "layer", "method", "action", "reason", "scores", "message"}
    assert k2[1]["reason"] == "greso.easy_skipped" and k2[1]["scores"]["keep_probability"] == 0.1
    assert k2[1]["message"].startswith("skipped by GRESO")
    assert len(rows(method="greso", action="skipped")) == 4
    assert rows(method="hive") == []
    assert [d["step"] for d in rows(prompt="k3", after=0)] == [1, 2]
    assert [d["step"] for d in rows(prompt="k3", step_min=1, step_max=1)] == [1]
    assert alice.get(url, {"action": "exploded"}).status_code == 400
    assert alice.get(url, {"step_min": 3, "step_max": 1}).status_code == 400


@pytest.mark.django_db
def test_decisions_page_with_a_cursor_and_every_row_appears_exactly_once(alice, decisions_run):
    url = f"/api/runs/{decisions_run.id}/decisions/"
    seen, page = [], alice.get(url, {"page_size": 5}).json()
    while True:
        assert len(page["results"]) <= 5
        seen += [d["id"] for d in page["results"]]
        if not page["next"]:
            break
        page = alice.get(page["next"]).json()
    assert len(seen) == 12 and len(set(seen)) == 12 and seen == sorted(seen)


@pytest.mark.django_db
def test_decision_pages_are_100_by_default_and_at_most_1000(alice, running):
    keys = [f"p{i}" for i in range(1100)]
    step_ingest(run_id=running.id, record=step_record(0, keys))
    url = f"/api/runs/{running.id}/decisions/"
    assert len(alice.get(url).json()["results"]) == 100
    assert len(alice.get(url, {"page_size": 5000}).json()["results"]) == 1000


@pytest.mark.django_db
def test_prompt_states_come_with_counts_of_every_bucket(alice, decisions_run):
    url = f"/api/runs/{decisions_run.id}/prompts/"
    body = alice.get(url).json()
    states = {p["prompt_key"]: p for p in body["results"]}
    # k0: all-correct at step 2; k1: mixed; k2 and k3 keep their step-0 state (skipped since).
    assert {k: s["bucket"] for k, s in states.items()} == {"k0": "too_easy", "k1": "edge", "k2": "too_easy",
                                                           "k3": "too_hard"}
    assert states["k0"]["visits"] == 3 and states["k0"]["last_step"] == 2 and states["k2"]["last_step"] == 0
    # The dataset has 16 training prompts; the 12 never touched count as unseen.
    assert body["buckets"] == {"unseen": 12, "too_easy": 2, "edge": 1, "too_hard": 1, "pruned": 0, "stale": 0}
    easy = alice.get(url, {"bucket": "too_easy"}).json()
    assert [p["prompt_key"] for p in easy["results"]] == ["k0", "k2"]
    assert easy["buckets"] == body["buckets"]
    assert alice.get(url, {"bucket": "lukewarm"}).status_code == 400
