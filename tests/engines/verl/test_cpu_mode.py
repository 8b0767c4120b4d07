"""The CPU mode's parts on their own: the version pin, the sampler, the launcher's plan.

The whole mode runs end to end in test_e2e_cpu.py; these are the quick checks of each part.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("verl")


def test_the_cpu_mode_refuses_another_verl_naming_both_versions():
    from workers.engines.verl.cpu import UnsupportedVerlVersion, check_verl_version

    check_verl_version("0.9.1")
    with pytest.raises(UnsupportedVerlVersion, match=r"built for verl 0\.9\.1, and verl 0\.9\.2 is installed"):
        check_verl_version("0.9.2")


def test_verls_cpu_and_accelerator_backend_string_becomes_plain_gloo():
    from workers.engines.verl.cpu import _plain_gloo

    seen = []
    init = _plain_gloo(lambda **kwargs: seen.append(kwargs["backend"]))
    init(backend="cpu:gloo,cpu:gloo")  # what verl builds when the device is the CPU itself
    init(backend="cpu:gloo,cuda:nccl")  # a GPU platform's string is left alone
    assert seen == ["gloo", "cpu:gloo,cuda:nccl"]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_a_sampled_tokens_log_prob_is_under_the_temperature_scaled_distribution(temperature):
    from workers.engines.verl.cpu.rollout import sample_next

    logits = torch.randn(50, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    expected = torch.log_softmax(logits / temperature, dim=-1)
    for _ in range(20):
        token, log_prob = sample_next(logits, temperature=temperature, top_k=-1, top_p=1.0, generator=gen)
        assert log_prob == pytest.approx(float(expected[token]), abs=1e-6)


def test_top_k_top_p_and_greedy_restrict_where_tokens_come_from():
    from workers.engines.verl.cpu.rollout import sample_next

    logits = torch.tensor([0.0, 3.0, 2.9, -1.0, 1.0])
    gen = torch.Generator().manual_seed(0)
    draws = {sample_next(logits, temperature=1.0, top_k=2, top_p=1.0, generator=gen)[0] for _ in range(200)}
    assert draws == {1, 2}
    assert {sample_next(logits, temperature=1.0, top_k=-1, top_p=0.01, generator=gen)[0] for _ in range(50)} == {1}
    assert sample_next(logits, temperature=0.0, top_k=-1, top_p=1.0, generator=gen)[0] == 1


def test_a_cpu_plan_builds_the_tiny_model_and_the_overrides_verl_needs_here(tmp_path):
    from workers.engines.config import RunConfig
    from workers.engines.verl.launch import VerlOptions, compose_overrides, plan, validate_with_verl

    config = RunConfig.from_mapping({"engine": "verl", "device": "cpu", "task_train_size": 8, "task_test_size": 2,
                                     "batch_size": 2, "group_size": 4, "steps": 2, "max_new_tokens": 4})
    launch = plan(config, VerlOptions(run_dir=str(tmp_path), micro_batch_per_gpu=2))
    composed = compose_overrides(launch.overrides)
    validate_with_verl(composed)
    assert (tmp_path / "model" / "config.json").exists()  # the tiny Llama, built here
    assert composed.actor_rollout_ref.model.path == str(tmp_path / "model")
    assert composed.actor_rollout_ref.rollout.name == "transformers"
    assert composed.trainer.device == "cpu" and composed.trainer.n_gpus_per_node == 1
    assert composed.actor_rollout_ref.actor.strategy == "fsdp2"
    # The longest prompt, measured with the model's tokenizer and chat template, rounded up to 8.
    assert composed.data.max_prompt_length % 8 == 0 and 8 <= composed.data.max_prompt_length <= 64
    assert launch.env["VERL_PLATFORM"] == "cpu"
    assert launch.env["VERL_USE_EXTERNAL_MODULES"] == "workers.engines.verl.cpu"


def test_the_tiny_model_is_for_the_cpu_mode_only(tmp_path):
    from workers.engines.config import ConfigError, RunConfig
    from workers.engines.verl.launch import VerlOptions, plan

    config = RunConfig.from_mapping({"engine": "verl", "device": "cuda", "batch_size": 2, "group_size": 4})
    with pytest.raises(ConfigError, match="'tiny' is built for device: cpu only"):
        plan(config, VerlOptions(run_dir=str(tmp_path)))
