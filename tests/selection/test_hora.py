import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.selection.reference import beta_gain, hit_utility_lgamma, hora_heap
from workers.selection import hora


def test_it_reproduces_the_worked_example_of_selectors_md():
    assert hora.allocate([0, 1, 4, 8], n_pre=8, extra_budget=96).tolist() == [51, 30, 11, 4]


def test_marginal_gain_follows_the_closed_form_from_beta_functions():
    for a, b in [(1.0, 9.0), (9.0, 1.0), (5.0, 5.0), (2.5, 0.5)]:
        ms = np.arange(1, 40)
        np.testing.assert_allclose(hora.marginal_gain(a, b, ms), [beta_gain(a, b, m) for m in ms],
                                   rtol=1e-9, atol=1e-15)


def test_marginal_gain_is_strictly_decreasing():
    gains = hora.marginal_gain(3.0, 7.0, np.arange(1, 500))
    assert np.all(np.diff(gains) < 0)


def test_hit_utility_is_the_sum_of_gains():
    np.testing.assert_allclose(hora.hit_utility(2.0, 6.0, 10), hit_utility_lgamma(2.0, 6.0, 10), rtol=1e-12)


def total_utility(successes, n_pre, allocation, prior=(1.0, 1.0)):
    a, b = hora.posterior(np.asarray(successes), n_pre, prior)
    return sum(hit_utility_lgamma(a[i], b[i], int(m)) for i, m in enumerate(allocation))


@settings(max_examples=80, deadline=None)
@given(
    successes=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    budget=st.integers(0, 9),
    prior=st.sampled_from([(1.0, 1.0), (0.5, 0.5), (2.0, 1.0)]),
)
def test_it_is_optimal_against_brute_force(successes, budget, prior):
    n_pre = 4
    ours = hora.allocate(successes, n_pre, budget, prior)
    assert ours.sum() == budget and ours.min() >= 0
    best = max(
        total_utility(successes, n_pre, alloc, prior)
        for alloc in itertools.product(range(budget + 1), repeat=len(successes))
        if sum(alloc) == budget
    )
    assert total_utility(successes, n_pre, ours, prior) == pytest.approx(best, rel=1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    successes=st.lists(st.integers(0, 8), min_size=1, max_size=40),
    per_prompt=st.integers(0, 24),
)
def test_it_equals_the_heap_greedy_including_ties(successes, per_prompt):
    budget = per_prompt * len(successes)
    assert hora.allocate(successes, 8, budget).tolist() == hora_heap(successes, 8, budget).tolist()


def test_it_goes_deep_when_one_prompt_earns_almost_the_whole_budget():
    successes = [8] * 1023 + [0]
    ours = hora.allocate(successes, 8, 24 * 1024)
    assert ours.tolist() == hora_heap(successes, 8, 24 * 1024).tolist()
    assert ours[-1] > 5000


def test_ties_go_to_the_lowest_prompt_index():
    assert hora.allocate([3, 3, 3], 8, 4).tolist() == [2, 1, 1]


@pytest.mark.parametrize(
    ("successes", "n_pre", "budget", "message"),
    [
        ([9], 8, 4, r"successes must lie in \[0, n0=8\]"),
        ([-1], 8, 4, "successes must lie"),
        ([1.5], 8, 4, "whole counts"),
        ([1], 0, 4, "n0"),
        ([1], 8, -1, "budget must be >= 0"),
        ([], 8, 3, "empty batch"),
    ],
)
def test_it_rejects_impossible_inputs(successes, n_pre, budget, message):
    with pytest.raises(ValueError, match=message):
        hora.allocate(successes, n_pre, budget)


def test_it_rejects_a_non_positive_prior():
    with pytest.raises(ValueError, match="prior"):
        hora.allocate([1], 8, 4, prior=(0.0, 1.0))


def test_empty_budget_and_empty_batch_allocate_nothing():
    assert hora.allocate([], 8, 0).tolist() == []
    assert hora.allocate([2, 5], 8, 0).tolist() == [0, 0]


def test_rollout_weights_give_every_prompt_equal_weight():
    weights = hora.rollout_weights([4, 8, 20])
    assert (weights * np.array([4, 8, 20])).tolist() == [1.0, 1.0, 1.0]


def test_mathematically_equal_gains_tie_to_the_lower_index():
    # Beta(5, 5) at m = 6 and Beta(6, 4) at m = 5 have the same gain 3/143 in exact
    # arithmetic, but the floats differ in the last bit; prompt 1 must win the tie.
    assert hora.allocate([0, 4, 5, 5, 8, 8], 8, 30).tolist() == [12, 6, 4, 4, 2, 2]
