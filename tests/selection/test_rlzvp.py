import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.selection.reference import rlzvp_loop
from workers.selection.grpo import broadcast_to_tokens, group_advantages
from workers.selection.rlzvp import token_advantages


def batch(rng, sizes, p_correct, width=6):
    ids = np.repeat(np.arange(len(sizes)), sizes)
    rewards = np.concatenate([(rng.random(s) < p).astype(float) for s, p in zip(sizes, p_correct)])
    lengths = rng.integers(1, width + 1, ids.size)
    mask = np.arange(width)[None, :] < lengths[:, None]
    entropy = np.where(mask, rng.random((ids.size, width)) * 3, np.nan)  # NaN on padding on purpose
    return rewards, ids, entropy, mask


def test_it_reduces_to_grpo_on_mixed_groups():
    rewards = np.array([1, 0, 0, 1, 1, 0.0])
    ids = np.array([0, 0, 0, 1, 1, 1])
    mask = np.ones((6, 4), bool)
    mask[2, 3] = False
    entropy = np.random.default_rng(0).random((6, 4))
    ours = token_advantages(rewards, ids, entropy, mask)
    np.testing.assert_allclose(ours, broadcast_to_tokens(group_advantages(rewards, ids), mask))


def test_all_correct_groups_get_alpha_times_entropy():
    entropy = np.array([[0.5, 1.0, 2.0], [0.2, 0.4, 9.9]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    out = token_advantages([1.0, 1.0], [7, 7], entropy, mask, alpha=0.1)
    np.testing.assert_allclose(out, [[0.05, 0.1, 0.2], [0.02, 0.04, 0.0]])


def test_all_wrong_groups_get_minus_alpha_times_the_gap_to_the_responses_max_entropy():
    entropy = np.array([[0.5, 1.0, 2.0], [0.2, 0.4, 9.9]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    out = token_advantages([0.0, 0.0], [7, 7], entropy, mask, alpha=0.2)
    # row 0: max 2.0; row 1: max over its own tokens is 0.4 (9.9 is padding)
    np.testing.assert_allclose(out, [[-0.3, -0.2, 0.0], [-0.04, 0.0, 0.0]])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 6), min_size=1, max_size=6))
def test_it_matches_the_loop_reference(seed, sizes):
    rng = np.random.default_rng(seed)
    rewards, ids, entropy, mask = batch(rng, sizes, rng.choice([0.0, 0.5, 1.0], len(sizes)))
    ours = token_advantages(rewards, ids, entropy, mask, alpha=0.1)
    np.testing.assert_allclose(ours, rlzvp_loop(rewards, ids, np.nan_to_num(entropy), mask), rtol=1e-10, atol=1e-12)
    assert np.all(ours[~mask] == 0)


def test_zero_variance_groups_carry_signal_that_grpo_lacks():
    rewards = np.array([1.0, 1.0, 0.0, 0.0])
    ids = np.array([0, 0, 1, 1])
    mask = np.ones((4, 3), bool)
    entropy = np.array([[0.1, 0.2, 0.3]] * 4)
    assert np.all(broadcast_to_tokens(group_advantages(rewards, ids), mask) == 0)
    out = token_advantages(rewards, ids, entropy, mask)
    assert np.all(out[:2] > 0) and np.all(out[2:, :2] < 0)


def test_it_rejects_nan_entropy_on_response_tokens_and_bad_shapes():
    mask = np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="NaN"):
        token_advantages([1.0, 1.0], [0, 0], np.array([[np.nan, 1], [1, 1]]), mask)
    with pytest.raises(ValueError, match=r"\(rollouts, tokens\)"):
        token_advantages([1.0, 1.0], [0, 0], np.ones((2, 3)), mask)
    with pytest.raises(ValueError, match="alpha"):
        token_advantages([1.0, 1.0], [0, 0], np.ones((2, 2)), mask, alpha=-1)
