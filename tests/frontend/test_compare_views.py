"""The compare page and its data endpoint (frontend/compare_views.py) against the real
database: which runs a user may compare, the 400s that say what to send, the run limit,
the data of one metric and of the accuracy axes, and the config diff on the page."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import step_ingest
from frontend.compare_charts import MAX_RUNS
from tests.frontend.conftest import KEYS, train
from tests.frontend.helpers import step_record

DATA = "/data/compare/"


def launched(team, dataset, name: str, steps: int, config: dict | None = None):
    run = run_create(team=team, dataset=dataset, name=name,
                     config=config or {"steps": 12, "batch_size": 4, "group_size": 4, "selectors": {"grpo": {}}})
    run_claim(run_id=run.id, worker="t")
    train(run, range(steps))
    return run


@pytest.fixture
def other(acme, dataset, enqueued):
    """A GRPO run of acme's, 4 steps, another config than ``run``'s."""
    return launched(acme, dataset, "other-run", 4)


def errors(response) -> str:
    assert response.status_code == 400, response.content[:300]
    return " ".join(response.json()["errors"]["parameters"])


# -- visibility --------------------------------------------------------------------------------------------


def test_runs_of_another_team_are_silently_left_out_of_the_page_and_the_data(bob, mallory, run, other, globex):
    theirs = launched(globex, dataset_import_builtin(team=globex, task="add", n_train=12, n_test=4, name="g"),
                      "their-run", 2)
    body = bob.get(DATA, {"run": [run.id, theirs.id, other.id, 99_999]}).json()
    assert [r["id"] for r in body["runs"]] == [run.id, other.id]  # as an id that does not exist
    assert [r["id"] for r in body["evaluations"]] == [run.id, other.id]
    assert mallory.get(DATA, {"run": [run.id]}).json()["runs"] == []
    page = mallory.get("/compare/", {"run": [run.id, theirs.id]})
    assert page.status_code == 200 and [r.id for r in page.context["chosen"]] == [theirs.id]
    assert "edge-run" not in page.content.decode()


def test_the_data_need_a_signed_in_user(client, run):
    assert client.get(DATA, {"run": [run.id]}).status_code == 302


# -- bad parameters, limits ------------------------------------------------------------------------------


BAD_DATA = [  # (query, what the answer says); the run's id is added where the query names none
    ({"run": ["abc"]}, "run must be a run's id"),
    ({"run": ["0"]}, "run must be a run's id"),
    ({"run": ["1e3"]}, "run must be a run's id"),
    ({"metric": "nope"}, "metric 'nope' is not one"),
    ({"metric": "metrics.no/such_metric"}, "is not one the runs compared record"),
    ({"metric": "seconds.nap"}, "is not one the runs compared record"),
]


def test_a_bad_parameter_is_a_400_that_says_what_to_send(bob, run):
    for query, says in BAD_DATA:
        assert says in errors(bob.get(DATA, {"run": [str(run.id)], **query})), query
    for query in ({}, {"metric": "reward_mean"}):
        assert "name the runs to compare" in errors(bob.get(DATA, query))


def test_the_page_answers_a_bad_parameter_with_a_400_page_saying_why(bob, run):
    for query, says in [*BAD_DATA[:4], ({"x": "minutes"}, "x must be one of rollouts, device_hours, flops")]:
        response = bob.get("/compare/", {"run": [str(run.id)], **query})
        assert response.status_code == 400, query
        page = response.content.decode()
        assert "Cannot compare:" in page and says.replace("'", "&#x27;") in page, query
        assert 'name="run"' in page  # the runs to pick from are still there


def test_at_most_max_runs_the_page_says_so_and_the_data_refuse_more(bob, acme, dataset, enqueued):
    runs = [launched(acme, dataset, f"r{i}", 0) for i in range(MAX_RUNS + 1)]
    ids = [r.id for r in runs]
    response = bob.get("/compare/", {"run": ids})
    assert response.status_code == 200
    assert [r.id for r in response.context["chosen"]] == ids[:MAX_RUNS]
    page = response.content.decode()
    assert f"You picked {MAX_RUNS + 1} runs; the page compares at most {MAX_RUNS} at once" in page
    assert page.index('id="compare-limit"') < page.index('id="compare-controls"')  # above the charts
    assert f"compare at most {MAX_RUNS} runs at once, got {MAX_RUNS + 1}" in errors(bob.get(DATA, {"run": ids}))
    assert len(bob.get(DATA, {"run": ids[:MAX_RUNS]}).json()["runs"]) == MAX_RUNS
    # the same id twice is one run
    assert len(bob.get(DATA, {"run": [ids[0]] * (MAX_RUNS + 3)}).json()["runs"]) == 1
    assert "compare-limit" not in bob.get("/compare/", {"run": ids[:MAX_RUNS]}).content.decode()


def test_one_request_costs_the_same_queries_for_one_run_and_for_several(bob, acme, dataset, enqueued):
    runs = [launched(acme, dataset, f"r{i}", 2) for i in range(4)]
    counts = []
    for chosen in (runs[:1], runs):
        with CaptureQueriesContext(connection) as queries:
            response = bob.get(DATA, {"run": [r.id for r in chosen], "metric": "metrics.hive/stage1_kept"})
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# -- the data -------------------------------------------------------------------------------------------


def test_the_data_overlay_the_chosen_metric_of_every_run(bob, run, other):
    body = bob.get(DATA, {"run": [run.id, other.id], "metric": "reward_mean"}).json()
    assert body["metric"] == {"name": "reward_mean", "label": "mean reward this step", "group": "Rewards and training",
                              "unit": "value"}
    first, second = body["runs"]
    assert first["label"] == f"edge-run #{run.id}" and second["label"] == f"other-run #{other.id}"
    assert first["step"] == [0, 1, 2, 3, 4, 5] and second["step"] == [0, 1, 2, 3]
    assert first["value"] == pytest.approx([0.25 + s / 100 for s in range(6)])
    phases = bob.get(DATA, {"run": [run.id, other.id], "metric": "seconds.generate"}).json()
    assert phases["metric"]["label"] == "seconds in the generate phase this step"
    assert phases["runs"][1]["value"] == [1.0] * 4
    hive = bob.get(DATA, {"run": [run.id, other.id], "metric": "metrics.hive/stage1_kept"}).json()
    assert hive["metric"]["label"] == "HIVE: kept by stage 1" and hive["runs"][0]["value"] == [4.0] * 6
    # the default: the mean reward
    assert bob.get(DATA, {"run": [run.id]}).json()["metric"]["name"] == "reward_mean"


def test_a_step_missing_from_the_record_is_a_gap(bob, acme, dataset, enqueued):
    run = launched(acme, dataset, "gappy", 2)
    step_ingest(run_id=run.id, record=step_record(5, KEYS[:4], skipped=KEYS[4:]))
    body = bob.get(DATA, {"run": [run.id], "metric": "rollouts_generated"}).json()["runs"][0]
    assert body["step"] == [0, 1, 2, 5] and body["value"] == [16, 16, None, 16] and body["recorded"] == 3


def test_the_accuracy_axes_in_rollouts_device_hours_and_flops(bob, run):
    evaluations = bob.get(DATA, {"run": [run.id]}).json()["evaluations"][0]
    # train(): an evaluation every 2 steps; each step 16 rollouts, 2 device-seconds, 1e9 FLOPs
    assert evaluations["step"] == [0, 2, 4] and evaluations["k"] == [4, 4, 4]
    assert evaluations["rollouts"] == [0, 32, 64]
    assert evaluations["device_hours"] == pytest.approx([0.0, 4 / 3600, 8 / 3600])
    assert evaluations["flops"] == [0.0, 2e9, 4e9]
    assert evaluations["pass_at_1"] == pytest.approx([0.1, 0.14, 0.18])
    assert set(bob.get(DATA, {"run": [run.id]}).json()["axes"]) == {"rollouts", "device_hours", "flops"}


# -- the page ---------------------------------------------------------------------------------------------


def test_the_page_offers_every_metric_of_the_runs_and_keeps_the_choices(bob, run, other):
    response = bob.get("/compare/", {"run": [run.id, other.id], "metric": "metrics.lze/pruned_pool", "x": "flops"})
    assert response.status_code == 200
    offered = [m["name"] for g in response.context["metric_groups"] for m in g["metrics"]]
    assert {"rollouts_generated", "seconds.generate", "seconds.update", "metrics.hive/stage1_kept",
            "metrics.lze/pruned_pool", "train.grad_norm", "flops_total"} <= set(offered)
    page = response.content.decode()
    assert '<option value="metrics.lze/pruned_pool" selected>LZE: pruned pool (prompts)</option>' in page
    assert '<option value="flops" selected>' in page
    assert 'name="metric" value="metrics.lze/pruned_pool"' in page  # the runs form keeps them too
    assert "6 × P × (response and prompt tokens in the policy update)" in page  # the FLOPs formula, stated
    basis = {b["run"].id: b for b in response.context["flops_basis"]}
    # step_record: 1e9 FLOPs over 80 response tokens (2 x 80 per parameter), no prompt tokens reported
    assert basis[run.id]["parameters"] == pytest.approx(1e9 / 160) and basis[run.id]["no_prompt_tokens"]
    assert "prompt tokens not reported by its engine" in page


def test_the_page_shows_only_the_config_keys_that_differ_until_asked(bob, run, other):
    response = bob.get("/compare/", {"run": [run.id, other.id]})
    diff = {row["key"]: row for row in response.context["diff"]}
    assert diff["steps"]["values"] == ["20", "12"] and diff["steps"]["differs"]
    assert diff["selectors.hora.n0"]["values"] == ["2", None] and diff["selectors.hora.n0"]["differs"]
    assert diff["selectors.grpo"]["values"] == [None, "{}"]
    assert diff["batch_size"]["differs"] is False
    page = response.content.decode()
    table = page[page.index('id="config-diff"'):page.index("</table>", page.index('id="config-diff"'))]
    assert '<tr class="differs" data-key="selectors.hora.n0">' in table
    assert '<tr class="same" data-key="batch_size" hidden>' in table
    assert '<span class="muted">not set</span>' in table
    assert f"{response.context['differing']} of {len(diff)} settings differ" in page


def test_a_kept_method_metric_the_new_runs_lack_falls_back_to_the_default_with_a_notice(bob, acme, dataset, enqueued):
    other = launched(acme, dataset, "grpo-run", 0)  # GRPO: no method panels, no steps yet
    response = bob.get("/compare/", {"run": [other.id], "metric": "metrics.hive/stage1_kept"})
    assert response.status_code == 200 and response.context["metric"].name == "reward_mean"
    assert "None of these runs records the metric “metrics.hive/stage1_kept”" in response.content.decode()
    # the data endpoint stays strict, and an unknown name of no family is a 400 on the page too
    assert "is not one the runs compared record" in errors(
        bob.get(DATA, {"run": [other.id], "metric": "metrics.hive/stage1_kept"}))
    assert bob.get("/compare/", {"run": [other.id], "metric": "train.nope"}).status_code == 400
    empty = bob.get("/compare/", {"metric": "seconds.generate"})  # no runs picked yet: nothing to check against
    assert empty.status_code == 200 and "None of these runs" not in empty.content.decode()
