"""A launch counts what queued and running runs are still forecast to use."""

import datetime as dt

import pytest
from django.utils import timezone

from controlplane.budgets.selectors import (
    DEFAULT_SECONDS_PER_ROLLOUT,
    DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND,
    budget_committed_device_hours,
    budget_current,
    forecast_device_hours,
)
from controlplane.budgets.services import BudgetExceeded, budget_set, usage_record
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.models import Run
from controlplane.runs.services import run_claim, run_create
from controlplane.telemetry.services import step_ingest
from tests.controlplane.api.helpers import step_record

CONFIG = {"batch_size": 8, "group_size": 4, "steps": 100}


@pytest.mark.django_db
def test_two_runs_that_each_fit_cannot_together_overshoot_the_budget(acme, enqueued):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    forecast = forecast_device_hours(team=acme, config=CONFIG, dataset=dataset)
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=7),
               limit_device_hours=forecast * 1.5)
    first = run_create(team=acme, dataset=dataset, name="first", config=CONFIG)
    assert budget_committed_device_hours(acme) == pytest.approx(forecast)
    with pytest.raises(BudgetExceeded):
        run_create(team=acme, dataset=dataset, name="second", config=CONFIG)
    # Usage already recorded for the first run is no longer "still to come".
    usage_record(run=first, step=0, device_seconds=forecast * 3600 / 2, uniform_seconds=0.0)
    assert budget_committed_device_hours(acme) == pytest.approx(forecast / 2)


@pytest.mark.django_db
def test_the_forecast_uses_the_teams_rate_on_the_runs_engine_and_device(acme, globex, enqueued):
    """A verl smoke run on this machine's CPU spends far more per rollout than the local
    engine: its history must not inflate the forecast of local runs, nor theirs hide its cost."""
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    keys = list(dataset.prompts.filter(split="train").values_list("key", flat=True)[:2])
    kinds = {("local", "auto"): 0.02, ("verl", "cpu"): 2.0}  # device-seconds of a 4-rollout step
    for (engine, device), seconds in kinds.items():
        run = run_create(team=acme, dataset=dataset, name=f"{engine}-{device}",
                         config={**CONFIG, "engine": engine, "device": device})
        run_claim(run_id=run.id, worker="test")
        step_ingest(run_id=run.id, record=step_record(0, keys, device_seconds=seconds))  # 2 prompts x N=2
    for (engine, device), seconds in kinds.items():
        assert forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100, engine=engine,
                                     device=device) == pytest.approx(seconds / 4 * 8 * 4 * 100 / 3600)
    # No history of this kind yet: the default rate, not another kind's.
    assert forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100, engine="verl", device="cuda") \
        == pytest.approx(DEFAULT_SECONDS_PER_ROLLOUT * 8 * 4 * 100 / 3600)
    # A team's first verl run on CPU is forecast at what such runs measured here, not at the local rate.
    assert forecast_device_hours(team=globex, batch_size=2, group_size=4, steps=6, engine="verl",
                                 device="cpu") == pytest.approx(DEFAULT_SECONDS_PER_ROLLOUT_BY_KIND[("verl", "cpu")]
                                                                * 2 * 4 * 6 / 3600)
    smoke = run_create(team=acme, dataset=dataset, name="smoke", config={**CONFIG, "engine": "verl", "device": "cpu"})
    # The same config as the measured verl run: its rate per rollout, plus the evaluations
    # (11 of 4 held-out prompts x 8 samples, each a quarter of a training rollout).
    assert smoke.forecast_device_hours == pytest.approx(2.0 / 4 * (8 * 4 * 100 + 11 * 4 * 8 / 4) / 3600)


# -- the forecast prices the whole config -------------------------------------------------------
BASE = {"batch_size": 8, "group_size": 4, "steps": 50, "max_new_tokens": 8, "model_dim": 64, "model_layers": 2,
        "eval_every": 10, "eval_k": 4, "warmup_steps": 500, "warmup_noise_steps": 100}
DOUBLED = {"max_new_tokens": 16, "model_dim": 128, "model_layers": 4, "eval_k": 8, "eval_every": 5,
           "warmup_steps": 1000, "steps": 100, "batch_size": 16, "group_size": 8}


@pytest.fixture
def measured(acme, enqueued):
    """Acme's dataset and one measured local run of BASE: 0.05 device-seconds for 4 rollouts."""
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    keys = list(dataset.prompts.filter(split="train").values_list("key", flat=True)[:2])
    run = run_create(team=acme, dataset=dataset, name="measured", config=BASE)
    run_claim(run_id=run.id, worker="test")
    step_ingest(run_id=run.id, record=step_record(0, keys, device_seconds=0.05))
    return dataset


@pytest.mark.django_db
@pytest.mark.parametrize("history", [False, True], ids=["default rate", "measured rate"])
@pytest.mark.parametrize("name", sorted(DOUBLED))
def test_doubling_any_cost_factor_raises_the_forecast(acme, enqueued, request, history, name):
    dataset = request.getfixturevalue("measured") if history else dataset_import_builtin(
        team=acme, task="add", n_train=16, n_test=4, name="add")
    base = forecast_device_hours(team=acme, config=BASE, dataset=dataset)
    more = forecast_device_hours(team=acme, config={**BASE, name: DOUBLED[name]}, dataset=dataset)
    assert more > base, name


@pytest.mark.django_db
def test_a_checkpoint_s_size_and_the_prompts_length_are_priced(acme, enqueued, tmp_path, monkeypatch):
    import json

    from controlplane.datasets.services import dataset_import

    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(tmp_path))
    for name, hidden in (("small", 256), ("large", 1024)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"hidden_size": hidden, "num_hidden_layers": 4,
                                                                 "vocab_size": 1000, "intermediate_size": 4 * hidden}))
    short = dataset_import(team=acme, name="short", filename="s.jsonl",
                           data=b"".join(json.dumps({"key": str(i), "prompt": "q", "answer": "1"}).encode() + b"\n"
                                         for i in range(4)))
    long = dataset_import(team=acme, name="long", filename="l.jsonl",
                          data=b"".join(json.dumps({"key": str(i), "prompt": "q" * 4000, "answer": "1"}).encode()
                                        + b"\n" for i in range(4)))
    config = {**CONFIG, "model": "small"}
    small = forecast_device_hours(team=acme, config=config, dataset=short)
    assert forecast_device_hours(team=acme, config={**config, "model": "large"}, dataset=short) > 4 * small
    assert forecast_device_hours(team=acme, config=config, dataset=long) > 10 * small


@pytest.mark.django_db
def test_the_measured_runs_own_factors_are_the_denominator(acme, measured):
    """A config like the measured run is forecast at its rate per rollout (plus its evaluations
    and warm-up); the rate is not the raw seconds per rollout of a run unlike the new one."""
    from workers.engines.cost import run_cost

    legacy = forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=50)  # 0.05 s / 4 rollouts
    assert legacy == pytest.approx(0.05 / 4 * 8 * 4 * 50 / 3600)
    cost = run_cost(BASE, prompt_chars=1, eval_prompts_available=4)  # prompt length cancels in the ratio only
    forecast = forecast_device_hours(team=acme, config=BASE, dataset=measured)
    assert forecast > legacy
    # Without evaluation and warm-up, the same config is exactly the old figure.
    bare = {**BASE, "eval_every": 0, "eval_prompts": 0, "warmup_steps": 0, "warmup_noise_steps": 0}
    assert cost.training > 0
    from controlplane.datasets.models import Prompt

    Prompt.objects.filter(dataset=measured, split="test").delete()  # no held-out prompts: no evaluation
    assert forecast_device_hours(team=acme, config=bare, dataset=measured) == pytest.approx(legacy)


@pytest.mark.django_db
@pytest.mark.parametrize("costly", [
    {"max_new_tokens": 2048}, {"model_dim": 1024, "model_heads": 8}, {"eval_k": 1024, "eval_every": 1},
    {"warmup_steps": 100_000},
])
def test_a_config_the_old_formula_let_through_is_refused(acme, enqueued, costly):
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    config = {**CONFIG, "warmup_steps": 0, "warmup_noise_steps": 0, **costly}
    old = forecast_device_hours(team=acme, batch_size=8, group_size=4, steps=100)  # B x N x steps only
    today = timezone.now().date()
    budget_set(team=acme, period_start=today, period_end=today + dt.timedelta(days=7),
               limit_device_hours=forecast_device_hours(team=acme, config={**CONFIG, "warmup_steps": 0,
                                                                            "warmup_noise_steps": 0},
                                                        dataset=dataset) * 2)
    assert old < budget_current(acme).limit_device_hours  # the old formula would have let it through
    with pytest.raises(BudgetExceeded):
        run_create(team=acme, dataset=dataset, name="costly", config=config)
    assert not Run.objects.filter(name="costly").exists()
    run_create(team=acme, dataset=dataset, name="plain", config={**CONFIG, "warmup_steps": 0,
                                                                 "warmup_noise_steps": 0})


@pytest.mark.django_db
def test_a_warm_up_the_team_already_ran_is_not_priced_again(acme, enqueued):
    """The tiny model's warm-up (4,900 supervised steps by default: minutes of CPU) is priced
    until a run of the team on the dataset with the same warm-up has trained a step; the
    workers then load it from their cache."""
    dataset = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    first = forecast_device_hours(team=acme, config=BASE, dataset=dataset)
    no_warmup = forecast_device_hours(team=acme, config={**BASE, "warmup_steps": 0, "warmup_noise_steps": 0},
                                      dataset=dataset)
    assert first > 10 * no_warmup
    keys = list(dataset.prompts.filter(split="train").values_list("key", flat=True)[:2])
    run = run_create(team=acme, dataset=dataset, name="warms-up", config=BASE)
    assert run.forecast_device_hours == pytest.approx(first)
    run_claim(run_id=run.id, worker="test")
    step_ingest(run_id=run.id, record=step_record(0, keys, device_seconds=0.05))
    cached = forecast_device_hours(team=acme, config=BASE, dataset=dataset)  # now at the measured rate
    assert cached == pytest.approx(forecast_device_hours(
        team=acme, config={**BASE, "warmup_steps": 0, "warmup_noise_steps": 0}, dataset=dataset))
    assert forecast_device_hours(team=acme, config={**BASE, "warmup_seed": 1}, dataset=dataset) > 10 * cached


@pytest.mark.django_db
def test_an_absurd_stored_config_or_checkpoint_config_cannot_zero_or_overflow_the_forecast(
        acme, measured, tmp_path, monkeypatch):
    import json
    import math

    before = forecast_device_hours(team=acme, config=BASE, dataset=measured)
    # A run stored before the ranges, measured with a response length whose cost overflows.
    old = run_create(team=acme, dataset=measured, name="old", config=BASE)
    Run.objects.filter(pk=old.pk).update(config={**old.config, "max_new_tokens": 1e308, "model_dim": 1e308})
    run_claim(run_id=old.id, worker="test")
    keys = list(measured.prompts.filter(split="train").values_list("key", flat=True)[:2])
    step_ingest(run_id=old.id, record=step_record(0, keys, device_seconds=0.05))
    assert forecast_device_hours(team=acme, config=BASE, dataset=measured) == pytest.approx(before, rel=0.5)
    monkeypatch.setenv("EDGEPLANE_MODELS_ROOT", str(tmp_path))
    (tmp_path / "huge").mkdir()
    (tmp_path / "huge" / "config.json").write_text(json.dumps({"hidden_size": 1e300, "num_hidden_layers": 1e300}))
    forecast = forecast_device_hours(team=acme, config={**BASE, "model": "huge"}, dataset=measured)
    assert math.isfinite(forecast) and forecast > before
