"""The launch forecast does not price a warm-up that ships with the code (the built-in warm
start, workers/engines/local/warm_start.py): the workers load it. Any other warm-up is priced
until the team has run it (test_budget_commitment.py)."""

from __future__ import annotations

import pytest

from controlplane.budgets.selectors import forecast_device_hours
from controlplane.datasets.services import dataset_import_builtin, dataset_store
from workers.engines.local import warm_start
from workers.problems import arithmetic
from workers.problems.dataset import PromptRecord

pytestmark = pytest.mark.django_db

CONFIG = {"batch_size": 8, "group_size": 4, "steps": 20, "eval_every": 10, "eval_k": 4}
NO_WARMUP = {"warmup_steps": 0, "warmup_noise_steps": 0}


def test_the_shipped_warm_up_is_not_priced_on_its_family_even_before_any_run(acme):
    assert warm_start.shipped_for(CONFIG, "add_aligned"), "no shipped warm start for the defaults"
    dataset = dataset_import_builtin(team=acme, task="add_aligned", n_train=16, n_test=4, name="aligned")
    bare = forecast_device_hours(team=acme, config={**CONFIG, **NO_WARMUP}, dataset=dataset)
    assert forecast_device_hours(team=acme, config=CONFIG, dataset=dataset) == pytest.approx(bare)
    # the built-in task without a dataset (the engine draws it): the same
    assert forecast_device_hours(team=acme, config={**CONFIG, "task": "add_aligned"}) == pytest.approx(
        forecast_device_hours(team=acme, config={**CONFIG, **NO_WARMUP, "task": "add_aligned"}))
    # a user's own warm-up settings train from scratch: priced (4,900 steps of 64 sequences dwarf 20 RL steps)
    for own in ({"warmup_seed": 1}, {"warmup_steps": 3000}, {"model_dim": 64}):
        assert forecast_device_hours(team=acme, config={**CONFIG, **own}, dataset=dataset) > 10 * bare, own


def test_a_warm_up_on_other_prompts_is_priced(acme):
    other = dataset_import_builtin(team=acme, task="add", n_train=16, n_test=4, name="add")
    bare = forecast_device_hours(team=acme, config={**CONFIG, **NO_WARMUP}, dataset=other)
    assert forecast_device_hours(team=acme, config=CONFIG, dataset=other) > 10 * bare
    # a user's own prompts, even of the same shape: their content is what the warm-up trains on
    splits = arithmetic.builtin_task("add_aligned", n_train=16, n_test=4)
    mine = [PromptRecord(key=f"mine:{i}", prompt=r.prompt, ground_truth=r.ground_truth, data_source="mine", index=i,
                         split=r.split) for i, r in enumerate(splits.train + splits.test)]
    own = dataset_store(team=acme, name="mine", filename="mine.jsonl", records=mine, content_hash="x" * 64)
    bare = forecast_device_hours(team=acme, config={**CONFIG, **NO_WARMUP}, dataset=own)
    assert forecast_device_hours(team=acme, config=CONFIG, dataset=own) > 10 * bare
