"""The reward adapter as verl 0.9.1 loads and calls it: through get_custom_reward_fn from a
config, and from the V1 reward loop's NaiveRewardManager.run_single on a real DataProto."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from workers.engines.verl import reward

pytest.importorskip("verl")

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager
from verl.trainer.ppo.reward import get_custom_reward_fn

REWARD_PATH = "pkg://workers.engines.verl.reward"


class CharTokenizer:
    """Token id = character code: enough for decode(), which is all the reward loop uses."""

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(int(i)) for i in ids if int(i) != 0)


def verl_config(**reward_kwargs) -> OmegaConf:
    fn = {"path": REWARD_PATH, "name": "compute_score"}
    if reward_kwargs:
        fn["reward_kwargs"] = reward_kwargs
    return OmegaConf.create({"reward": {"custom_reward_function": fn}})


def one_response(text: str, ground_truth: str, extra_info: dict, width: int = 16) -> DataProto:
    ids = [ord(c) for c in text][:width]
    responses = torch.zeros(1, width, dtype=torch.long)
    responses[0, : len(ids)] = torch.tensor(ids)
    prompts = torch.full((1, 4), 65, dtype=torch.long)
    mask = torch.cat([torch.ones(1, 4), (torch.arange(width) < len(ids)).float()[None]], dim=1).long()
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={"data_source": np.array(["edgeplane/add"], dtype=object),
                     "reward_model": np.array([{"style": "rule", "ground_truth": ground_truth}], dtype=object),
                     "extra_info": np.array([dict(extra_info)], dtype=object)},
    )


def score_in_reward_loop(fn, data: DataProto) -> dict:
    manager = NaiveRewardManager(config=OmegaConf.create({}), tokenizer=CharTokenizer(), compute_score=fn)
    return manager.loop.run_until_complete(manager.run_single(data))


def test_verls_loader_finds_compute_score_and_merges_reward_kwargs():
    fn = get_custom_reward_fn(verl_config(verifier="numeric", verifier_options={"rel_tol": 0.01}))
    assert fn(data_source="edgeplane/add", solution_str="about 100.5", ground_truth="100", extra_info={}) == 1.0
    assert fn(data_source="edgeplane/add", solution_str="about 103", ground_truth="100", extra_info={}) == 0.0


def test_the_v1_reward_loop_scores_a_decoded_response_with_the_runs_verifier():
    fn = get_custom_reward_fn(verl_config(verifier="numeric"))
    right = score_in_reward_loop(fn, one_response("12", "12", {"key": "edgeplane/add:3", "index": 3}))
    wrong = score_in_reward_loop(fn, one_response("13", "12", {"key": "edgeplane/add:3", "index": 3}))
    assert right == {"reward_score": 1.0, "reward_extra_info": {"acc": 1.0}}
    assert wrong["reward_score"] == 0.0


def test_a_per_prompt_verifier_in_extra_info_wins_over_the_run_default():
    fn = get_custom_reward_fn(verl_config(verifier="exact"))
    data = one_response("x = 12.0", "12", {"verifier": "numeric"})
    assert score_in_reward_loop(fn, data)["reward_score"] == 1.0
    assert score_in_reward_loop(fn, one_response("x = 12.0", "12", {}))["reward_score"] == 0.0


def test_the_environment_chooses_when_the_config_does_not(monkeypatch):
    monkeypatch.setenv(reward.ENV_VERIFIER, "boxed")
    monkeypatch.setenv(reward.ENV_OPTIONS, '{"timeout_s": null}')
    fn = get_custom_reward_fn(verl_config())
    assert fn(data_source="d", solution_str=r"so \boxed{7}", ground_truth="7", extra_info=None) == 1.0
    monkeypatch.delenv(reward.ENV_VERIFIER)
    assert reward.choose_verifier({}) == ("exact", {})


def test_an_unknown_verifier_fails_loudly_naming_the_valid_ones():
    fn = get_custom_reward_fn(verl_config(verifier="regex"))
    with pytest.raises(ValueError, match="unknown verifier 'regex'; valid: boxed, exact, numeric"):
        fn(data_source="d", solution_str="1", ground_truth="1", extra_info={})

