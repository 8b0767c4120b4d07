import numpy as np
import pytest

from workers.selection import lze


def test_energy_by_hand():
    # D = max(1 - 0.25, 0.05) = 0.75; 4p(1-p) = 1; m = min(2 * |0.5 - 0.3|, 1) = 0.4
    assert lze.energy(0.5, 0.25, 0.3) == pytest.approx(0.75 * 1.0 * (1 + 0.3 * 0.4))
    # signed momentum (paper text): m = 0.5 - 0.3 = 0.2
    assert lze.energy(0.5, 0.25, 0.3, momentum="signed") == pytest.approx(0.75 * 1.06)
    # signed momentum lowers the energy of a prompt getting worse
    assert lze.energy(0.5, 0.25, 0.7, momentum="signed") == pytest.approx(0.75 * (1 - 0.3 * 0.2))


def test_energy_vanishes_outside_the_learning_zone_and_keeps_a_difficulty_floor():
    assert lze.energy([0.0, 1.0], [0.5, 0.5], [0.5, 0.5]).tolist() == [0.0, 0.0]
    # initially solved prompt: D = max(0, 0.05)
    assert lze.energy(0.5, 1.0, 0.5) == pytest.approx(0.05)


def test_momentum_is_zero_on_first_sight():
    p = np.array([0.25, 0.5, 0.75])
    np.testing.assert_allclose(lze.energy(p, p, p), np.maximum(1 - p, 0.05) * 4 * p * (1 - p))


def test_abs_momentum_is_capped_at_one():
    assert lze.energy(0.5, 0.0, 0.0, momentum_weight=1.0) == pytest.approx(1.0 * 1.0 * 2.0)


def test_ema_update():
    assert lze.update_ema(0.5, 1.0) == pytest.approx(0.55)


def test_it_rejects_nan_and_unknown_momentum():
    with pytest.raises(ValueError, match="p must be pass rates"):
        lze.energy([np.nan], [0.5], [0.5])
    with pytest.raises(ValueError, match="lze.momentum"):
        lze.energy(0.5, 0.5, 0.5, momentum="squared")


def test_select_count_follows_kappa_with_a_floor_and_live_cap():
    assert lze.select_count(64, 64) == 25  # floor(0.4 * 64)
    assert lze.select_count(64, 64, kappa=0.1) == 19  # floor(0.3 * 64)
    assert lze.select_count(64, 10) == 10


def test_select_without_noise_takes_the_top_k_live_groups():
    energy = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.6, 0.95, 0.3, 0.4, 0.5])
    live = np.ones(10, bool)
    live[6] = False  # highest energy but not live
    chosen = lze.select(energy, live, kappa=0.4, noise=0.0, rng=np.random.default_rng(0))
    assert np.flatnonzero(chosen).tolist() == [0, 2, 3, 5]


def test_select_is_reproducible_and_only_picks_live_groups():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    energy = np.random.default_rng(1).random(200)
    live = np.random.default_rng(2).random(200) < 0.7
    a = lze.select(energy, live, rng=rng_a)
    b = lze.select(energy, live, rng=rng_b)
    assert a.tolist() == b.tolist()
    assert a.sum() == 80 and not a[~live].any()


def test_gumbel_noise_reorders_only_near_ties():
    energy = np.array([1.0, 0.0, 0.5, 0.5001])
    picks = [np.flatnonzero(lze.select(energy, np.ones(4, bool), kappa=0.5, rng=np.random.default_rng(s)))
             for s in range(200)]
    assert all(0 in p.tolist() for p in picks)  # 1.0 is far above the noise scale 0.05
    assert {p.tolist()[1] for p in picks} == {2, 3}  # the near tie goes both ways


def test_select_with_no_live_groups_selects_nothing():
    assert not lze.select(np.ones(4), np.zeros(4, bool), rng=np.random.default_rng(0)).any()


def test_replay_count():
    assert [lze.replay_count(n) for n in (0, 1, 9, 10, 25)] == [0, 1, 1, 1, 2]


@pytest.mark.parametrize("n", [10, 60_000, 200_000])
@pytest.mark.parametrize("share", [0.001, 0.4, 0.999])
def test_top_k_is_exact_at_every_size(n, share):
    rng = np.random.default_rng(n)
    values = rng.random(n)
    values[: n // 2] = np.sort(values[: n // 2])  # partly ordered: a biased strided sample
    k = max(1, int(share * n))
    chosen = lze.top_k(values, k)
    assert chosen.sum() == k
    assert np.sort(values[chosen]).tolist() == np.sort(values)[-k:].tolist()

