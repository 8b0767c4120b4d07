"""EdgeplaneTrainer wiring: registration, TaskRunner, the launcher's overrides, the replay buffer.

What runs here without GPUs: verl's registry and config composition, the launcher's plan,
and ``EdgeplaneTrainer.__init__`` (verl's ``PPOTrainer.__init__``: checkpoint callback,
replay buffer). ``EdgeplaneTaskRunner.run`` and ``workers.engines.verl.train`` start Ray
worker groups and vLLM: not run here.
"""

from __future__ import annotations

import inspect

import pytest

from workers.engines.config import ConfigError, RunConfig
from workers.engines.verl.launch import (
    TRAIN_MODULE,
    VerlOptions,
    compose_overrides,
    plan,
    validate_with_verl,
)

pytest.importorskip("verl")

SMALL = {"engine": "verl", "task": "add", "task_train_size": 24, "task_test_size": 6, "batch_size": 8, "group_size": 4,
         "minibatches": 2, "steps": 5, "checkpoint_every": 2, "eval_every": 0, "verifier": "numeric"}


def _plan(tmp_path, selectors, **run):
    config = RunConfig.from_mapping({**SMALL, **run, "selectors": selectors})
    return plan(config, VerlOptions(run_dir=str(tmp_path), model_path="/models/m"))


def test_trainer_is_registered_and_the_task_runner_is_a_ray_actor():
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from workers.engines.verl.trainer import EdgeplaneTrainer, _task_runner_class

    assert get_trainer_cls("edgeplane_sync") is EdgeplaneTrainer
    assert issubclass(EdgeplaneTrainer, PPOTrainerSync) and not EdgeplaneTrainer.__abstractmethods__
    runner = _task_runner_class()
    assert hasattr(runner, "remote") and hasattr(runner.__ray_metadata__.modified_class, "run")


def test_each_concern_overrides_the_verl_hooks_its_module_names_and_no_other():
    """verl's base class calls its hooks by name, so a method of ours with a verl name replaces
    verl's: each concern's overrides are the ones its module's docstring lists, each still
    exists in the installed verl, and no concern defines a method another one has."""
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from workers.engines.verl.allocating import TwoPhaseRollout
    from workers.engines.verl.checkpoint import SelectionCheckpoint
    from workers.engines.verl.closing import StepClosing
    from workers.engines.verl.selecting import PromptSelection
    from workers.engines.verl.shaping import AdvantageShaping
    from workers.engines.verl.trainer import EdgeplaneTrainer

    overrides = {
        EdgeplaneTrainer: {"__init__", "_build_replay_buffer", "on_init_end", "on_step_begin", "prepare_step", "step",
                           "on_step_end", "fit"},
        PromptSelection: {"_init_dataloader", "_fetch_one_gen_batch", "_add_prompts_to_generate"},
        TwoPhaseRollout: {"_submit_batch_to_rollout"},
        AdvantageShaping: {"_compute_advantage"},
        StepClosing: {"_validate"},
        SelectionCheckpoint: {"_load_checkpoint"},
    }
    # the concerns come before verl's class, so each override's super() reaches verl's own
    assert EdgeplaneTrainer.__mro__[:len(overrides) + 1] == (*overrides, PPOTrainerSync)
    def methods(cls: type) -> set[str]:  # properties too; not the ABC's bookkeeping, nor the docstring
        return {name for name, v in vars(cls).items() if inspect.isfunction(v) or isinstance(v, property)}

    verl = {name for name in dir(PPOTrainerSync) if name == "__init__" or not name.startswith("__")}
    for cls, hooks in overrides.items():
        assert methods(cls) & verl == hooks, cls.__name__
    own = [name for cls in overrides for name in methods(cls)]
    assert sorted(own) == sorted(set(own))


@pytest.mark.parametrize("selectors, post_filter", [
    ({"grpo": {}}, None),
    ({"dapo": {}}, "dapo"),
    ({"greso": {}}, "greso"),
    ({"hive": {}, "rlzvp": {}}, None),  # RL-ZVP learns from zero-variance groups: no post-filter
    ({"lze": {"prune": True}}, None),
    ({"hora": {"n0": 2}, "rlzvp": {}}, None),
])
def test_every_run_goes_through_edgeplanes_trainer_with_verls_filter_as_the_post_filter(
        tmp_path, selectors, post_filter):
    from workers.engines.verl.edgeplane_config import selection_methods
    from workers.engines.verl.sampler import EdgeplaneReplayBuffer
    from workers.engines.verl.trainer import EdgeplaneTrainer

    launch = _plan(tmp_path, selectors)
    assert launch.argv[1:3] == ["-m", TRAIN_MODULE]
    config = compose_overrides(launch.overrides)
    assert selection_methods(config) == RunConfig.from_mapping({**SMALL, "selectors": selectors}).selector_params()
    assert config.trainer.v1.trainer_mode == "sync"
    assert config.trainer.checkpoint_callback_class.endswith("SelectionCheckpointCallback")
    assert bool(config.algorithm.filter_groups.enable) == (post_filter is not None)
    validate_with_verl(config)  # what main_ppo checks first on the cluster

    trainer = EdgeplaneTrainer(config)  # verl's PPOTrainer.__init__, our buffer with verl's arguments
    buffer = trainer.replay_buffer
    assert type(buffer) is EdgeplaneReplayBuffer
    assert buffer.filter_groups_metric == ("reward" if post_filter else None)
    assert buffer.refill_fn == trainer._add_prompts_to_generate  # refills go through our selection
    assert buffer.train_batch_size == SMALL["batch_size"]
    assert trainer.sink is None  # no control plane in the environment: nothing reported, nothing refused


def test_rlzvp_and_the_device_hour_cap_reach_the_trainer(tmp_path):
    from workers.engines.verl.trainer import EdgeplaneTrainer

    config = compose_overrides(_plan(tmp_path, {"rlzvp": {"alpha": 0.2, "norm_by_std": False}},
                                     max_device_hours=1.5).overrides)
    assert config.algorithm.norm_adv_by_std_in_grpo is False
    trainer = EdgeplaneTrainer(config)
    assert trainer.pipeline.selectors["rlzvp"].params.alpha == 0.2
    assert trainer.max_device_hours == 1.5
    assert trainer.gpus == 8  # nnodes 1 x 8 GPUs per node: what device-seconds are multiplied by


def test_hora_runs_without_a_post_filter_and_is_refused_with_one(tmp_path):
    config = compose_overrides(_plan(tmp_path, {"hora": {"n0": 2}}).overrides)
    assert not config.algorithm.filter_groups.enable
    with pytest.raises(ConfigError, match="hora with dapo's zero-variance post-filter.*drop dapo"):
        _plan(tmp_path / "d", {"hora": {"n0": 2}, "dapo": {}})


def test_a_half_configured_control_plane_is_refused(tmp_path, monkeypatch):
    from workers.engines.verl.trainer import EdgeplaneTrainer

    monkeypatch.setenv("EDGEPLANE_CONTROL_URL", "http://127.0.0.1:9")
    config = compose_overrides(_plan(tmp_path, {"grpo": {}}).overrides)
    with pytest.raises(ValueError, match="EDGEPLANE_RUN_ID, EDGEPLANE_RUN_TOKEN missing"):
        EdgeplaneTrainer(config)


def test_several_updates_per_step_are_refused(tmp_path):
    from workers.engines.verl.trainer import EdgeplaneTrainer

    config = compose_overrides([*_plan(tmp_path, {"grpo": {}}).overrides, "+trainer.v1.sync.parameter_sync_step=2"])
    with pytest.raises(ValueError, match="parameter_sync_step = 2: .* set it to 1"):
        EdgeplaneTrainer(config)


def test_the_token_can_come_as_a_file_as_ray_jobs_get_it(tmp_path):
    from workers.engines.verl.launch import write_token_file
    from workers.engines.verl.report import sink_from_env

    path = write_token_file(tmp_path / "run", "s3cret")
    assert path.stat().st_mode & 0o777 == 0o600
    sink = sink_from_env(tmp_path / "run", {"EDGEPLANE_CONTROL_URL": "http://cp:8000", "EDGEPLANE_RUN_ID": "12",
                                            "EDGEPLANE_RUN_TOKEN_FILE": str(path), "EDGEPLANE_ATTEMPT": "2"})
    assert sink is not None and sink.token == "s3cret" and sink.attempt == 2
    assert sink.url == "http://cp:8000/api/ingest/runs/12/steps/"
