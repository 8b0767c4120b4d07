"""The launcher against verl 0.9.1's own schema: every override composes onto ppo_trainer.yaml,
a bad one is refused with a message, the parquet carries the stable key, and the two
submission paths (local subprocess, Ray Jobs API) get the right command. No GPU is used."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from workers.engines.config import ConfigError, RunConfig
from workers.engines.verl.launch import (
    OverrideError,
    VerlOptions,
    compose_overrides,
    plan,
    submit,
)
from workers.engines.verl.submit import main
from workers.problems.arithmetic import builtin_task

pytest.importorskip("verl")

SMALL = {"engine": "verl", "task": "add", "task_train_size": 24, "task_test_size": 6, "batch_size": 8, "group_size": 4,
         "minibatches": 2, "steps": 5, "checkpoint_every": 2, "eval_every": 0, "verifier": "numeric"}


def config_of(**changes) -> RunConfig:
    return RunConfig.from_mapping({**SMALL, **changes})


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One plan (GRPO + DAPO, Dr. GRPO) and verl's config composed from it: composing is slow."""
    run_dir = tmp_path_factory.mktemp("run")
    options = VerlOptions(run_dir=str(run_dir), attempt_id="run-7-attempt-2", model_path="/models/Qwen2.5-0.5B",
                          nnodes=2, gpus_per_node=8)
    launch = plan(config_of(selectors={"grpo": {}, "dapo": {}}, dr_grpo=True), options)
    return launch, options, compose_overrides(launch.overrides)


def test_every_override_lands_on_a_key_of_verls_schema(launched):
    launch, _, composed = launched
    for override in launch.overrides:
        key = override.split("=", 1)[0]
        got = OmegaConf.select(composed, key.lstrip("+"), default="<absent>")
        assert got != "<absent>", f"{key} is not in verl's config"
    assert composed.trainer.nnodes == 2 and composed.trainer.n_gpus_per_node == 8
    assert composed.trainer.experiment_name == "run-7-attempt-2"
    assert composed.trainer.save_freq == 2 and composed.trainer.resume_mode == "auto"
    # eval_every 0: validate at the end only. verl's test_freq=-1 would skip that too; test_freq =
    # steps validates at the last step (is_last_step) and nowhere before.
    assert composed.trainer.test_freq == composed.trainer.total_training_steps == 5
    # Only `steps` ends the run: fit also stops after total_epochs passes over the data.
    assert composed.trainer.total_epochs >= composed.trainer.total_training_steps
    # The clip goes where verl 0.9.1's FSDP engine reads it (actor.grad_clip is read by nothing).
    assert composed.actor_rollout_ref.actor.optim.clip_grad == 1.0
    assert list(composed.trainer.logger) == ["console", "file"]
    assert composed.actor_rollout_ref.rollout.name == "vllm" and composed.actor_rollout_ref.rollout.n == 4
    assert composed.actor_rollout_ref.actor.ppo_mini_batch_size == 4
    assert composed.algorithm.adv_estimator == "grpo" and composed.algorithm.norm_adv_by_std_in_grpo is False
    assert composed.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-sum-norm"
    assert composed.algorithm.filter_groups.enable is True and composed.algorithm.filter_groups.metric == "reward"
    assert composed.trainer.use_v1 is True and composed.trainer.v1.trainer_mode == "sync"


def test_the_composed_config_loads_our_reward_adapter_through_verls_loader(launched):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    _, _, composed = launched
    fn = get_custom_reward_fn(composed)
    assert fn(data_source="edgeplane/add", solution_str="= 12.0", ground_truth="12", extra_info={}) == 1.0


def test_the_exported_parquet_carries_the_stable_prompt_key(launched):
    launch, _, composed = launched
    assert composed.data.train_files == str(launch.train_file)
    table = pq.read_table(launch.train_file).to_pylist()
    expected = [r.key for r in builtin_task("add", seed=0, n_train=24, n_test=6).train]
    assert [row["key"] for row in table] == expected
    assert all(row["extra_info"]["key"] == row["key"] for row in table)
    assert all(row["reward_model"]["ground_truth"] for row in table)
    assert len(pq.read_table(launch.val_file)) == 6


def test_a_bad_override_is_refused_naming_the_key(launched):
    launch, _, _ = launched
    with pytest.raises(OverrideError, match="trainer.n_gpus_per_nod"):
        compose_overrides([*launch.overrides, "trainer.n_gpus_per_nod=4"])
    with pytest.raises(OverrideError, match="trainer.nnodes: verl expects a number .*got 'two'"):
        compose_overrides(["trainer.nnodes=two"])


def test_selectors_verl_cannot_run_are_refused_rather_than_run_as_plain_grpo(tmp_path):
    with pytest.raises(ConfigError, match="hora with hive's zero-variance post-filter"):
        plan(config_of(selectors={"hive": {}, "hora": {"n0": 2}}), VerlOptions(run_dir=str(tmp_path), model_path="/m"))
    with pytest.raises(ConfigError, match="Hugging Face checkpoints"):
        plan(config_of(), VerlOptions(run_dir=str(tmp_path)))


def test_without_a_cluster_address_the_job_is_a_local_subprocess_with_the_token_in_its_env_only(launched):
    launch, options, _ = launched
    started = {}

    class Process:
        pid = 4242

    def popen(argv, **kwargs):
        started.update(argv=argv, **kwargs)
        return Process()

    answer = submit(launch, options, secrets={"EDGEPLANE_RUN_TOKEN": "s3cret"}, popen=popen)
    assert answer == "pid:4242"
    assert started["argv"][:3] == [options.python, "-m", "workers.engines.verl.train"]
    assert started["argv"][3:-1] == launch.overrides
    assert started["argv"][-1].startswith("hydra.run.dir=") and "run-7-attempt-2" in started["argv"][-1]
    assert started["env"]["EDGEPLANE_RUN_TOKEN"] == "s3cret" and started["env"]["EDGEPLANE_VERIFIER"] == "numeric"
    assert started["env"]["VERL_FILE_LOGGER_PATH"].endswith("verl-metrics-run-7-attempt-2.jsonl")
    assert started["start_new_session"] is True
    assert "s3cret" not in launch.command()


def test_the_cli_dry_run_prints_the_command_and_refuses_a_bad_override(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("engine: verl\ntask: add\ntask_train_size: 16\ntask_test_size: 4\nbatch_size: 4\n")
    args = ["--config", str(config), "--run-dir", str(tmp_path / "run"), "--model-path", "/m", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "-m workers.engines.verl.train" in out and "data.train_batch_size=4" in out
    assert main([*args, "trainer.bogus=1"]) == 2
    assert "trainer.bogus" in capsys.readouterr().err
    # verl's own config check runs too: 4 prompts x 8 rollouts do not split over 3 GPUs
    assert main([*args, "--gpus-per-node", "3"]) == 2
    assert "verl's config check refuses the job" in capsys.readouterr().err
