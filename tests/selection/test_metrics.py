import itertools

import numpy as np
import pytest

from workers.selection.metrics import pass_at_k


def brute_force(n, c, k):
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (8, 1, 8), (10, 3, 4), (6, 6, 2)])
def test_it_is_the_unbiased_estimator(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-15)


def test_pass_at_1_is_the_mean_accuracy_and_arrays_broadcast():
    np.testing.assert_allclose(pass_at_k(np.array([4, 8]), np.array([1, 6]), 1), [0.25, 0.75])


def test_it_rejects_impossible_counts():
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="at least 8 samples"):
        pass_at_k(4, 1, 8)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, 1, 0)


def test_it_is_exact_for_large_n():
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001, rel=1e-12)
