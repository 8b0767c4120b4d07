import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from tests.selection.reference import grpo_loop
from workers.selection.groups import group_stats
from workers.selection.grpo import broadcast_to_tokens, group_advantages


def verl_advantages(rewards, group_ids, norm_by_std=True, eps=1e-6, width=5):
    n = len(rewards)
    token_rewards = torch.zeros(n, width, dtype=torch.float64)
    lengths = np.arange(n) % width + 1
    token_rewards[torch.arange(n), torch.as_tensor(lengths - 1)] = torch.as_tensor(rewards, dtype=torch.float64)
    mask = torch.as_tensor(np.arange(width)[None, :] < lengths[:, None], dtype=torch.float64)
    adv, _ = compute_grpo_outcome_advantage(
        token_rewards, mask, np.asarray(group_ids), epsilon=eps, norm_adv_by_std_in_grpo=norm_by_std
    )
    return adv.numpy(), mask.numpy()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
    seed=st.integers(0, 10_000),
    norm=st.booleans(),
    binary=st.booleans(),
)
def test_it_matches_verls_grpo_advantage_for_groups_of_any_size(sizes, seed, norm, binary):
    rng = np.random.default_rng(seed)
    group_ids = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(group_ids)
    n = group_ids.size
    rewards = rng.integers(0, 2, n).astype(float) if binary else rng.normal(size=n)
    ours = group_advantages(rewards, group_ids, norm_by_std=norm)
    theirs, mask = verl_advantages(rewards, group_ids, norm_by_std=norm)
    # verl keeps a group of one's mean 0 / std 1 as float32 tensors: float32 precision there.
    np.testing.assert_allclose(broadcast_to_tokens(ours, mask), theirs, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours, grpo_loop(rewards, group_ids, norm), rtol=1e-10, atol=1e-12)


def test_it_gives_a_group_of_one_its_reward_as_verl_does():
    adv = group_advantages([1.0, 0.0, 1.0], ["a", "b", "c"])
    np.testing.assert_allclose(adv, [1 / (1 + 1e-6), 0.0, 1 / (1 + 1e-6)])


def test_zero_variance_groups_get_exactly_zero():
    adv = group_advantages([1, 1, 1, 0, 0, 0, 1, 0], [0, 0, 0, 1, 1, 1, 2, 2])
    assert adv[:6].tolist() == [0.0] * 6
    # A mixed pair: +-(0.5 / (std 0.7071 + eps))
    np.testing.assert_allclose(adv[6:], [0.5 / (np.sqrt(0.5) + 1e-6), -0.5 / (np.sqrt(0.5) + 1e-6)])


def test_it_accepts_string_group_ids_and_empty_input():
    assert group_advantages([], []).shape == (0,)
    adv = group_advantages([1.0, 0.0], ["x:1", "x:1"])
    assert adv[0] > 0 > adv[1]


def test_it_rejects_nan_rewards_naming_the_rollouts():
    with pytest.raises(ValueError, match=r"rollouts 1, 3 have NaN or infinity"):
        group_advantages([1.0, np.nan, 0.0, np.inf], [0, 0, 1, 1])


def test_it_rejects_mismatched_group_ids():
    with pytest.raises(ValueError, match="one group per rollout"):
        group_advantages([1.0, 0.0, 1.0], [0, 0])


def test_group_stats_count_successes_against_the_threshold():
    groups = group_stats([1, 1, -1, -1, 1, -1], [0, 0, 1, 1, 2, 2])  # DAPO's +-1 rewards
    assert groups.successes.tolist() == [2, 0, 1]
    assert groups.zero_variance.tolist() == [True, True, False]
    assert groups.all_correct.tolist() == [True, False, False]
    assert groups.all_wrong.tolist() == [False, True, False]
