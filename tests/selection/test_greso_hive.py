import numpy as np
import pytest

from workers.selection import greso, hive


def test_keep_probability_decays_with_the_streak_and_stops_at_the_floor():
    probability = greso.keep_probability([0, 1, 2, 0, 0, 10], [0, 0, 0, 1, 3, 0], p_easy=0.5, p_hard=0.8)
    np.testing.assert_allclose(probability, [1.0, 0.5, 0.25, 0.8, 0.512, 0.01])


def test_keep_probability_rejects_bad_bases():
    with pytest.raises(ValueError, match="greso.p_easy"):
        greso.keep_probability([1], [0], p_easy=1.5, p_hard=0.5)
    with pytest.raises(ValueError, match="negative"):
        greso.keep_probability([-1], [0], p_easy=0.5, p_hard=0.5)


def test_controller_moves_toward_the_targets_within_bounds():
    control = greso.Controller()
    control.update(rho_easy=0.5, rho_hard=0.0)  # too many easy, too few hard
    assert (control.p_easy, control.p_hard) == pytest.approx((0.49, 0.51))
    for _ in range(100):
        control.update(rho_easy=1.0, rho_hard=0.0)
    assert (control.p_easy, control.p_hard) == pytest.approx((0.05, 0.95))


def test_next_rollout_batch():
    assert greso.next_rollout_batch(100, 0.5, 512) == 250
    assert greso.next_rollout_batch(10, 0.0, 512) == 64
    assert greso.next_rollout_batch(1000, 0.2, 512) == 512
    assert greso.next_rollout_batch(10, 1.0, 512) == 512  # guarded: no survivors expected
    assert greso.next_rollout_batch(0, 0.3, 512) == 0


def test_median_gate_keeps_the_upper_half():
    v = np.array([0.41, 0.9, 0.57, 0.2, 0.7, 0.57])
    assert hive.entropy_gate(v).tolist() == [False, True, True, False, True, True]
    assert hive.gate_threshold(v) == (0.57, np.inf)


def test_band_gate_drops_the_most_uncertain_quarter_and_keeps_the_next_half():
    v = np.arange(8, dtype=float)  # descending order: 7 6 | 5 4 3 2 | 1 0
    keep = hive.entropy_gate(v, mode="band")
    assert np.flatnonzero(keep).tolist() == [2, 3, 4, 5]
    assert hive.gate_threshold(v, mode="band") == (2.0, 5.0)  # lowest and highest kept


def test_gate_rejects_nan_and_unknown_modes():
    with pytest.raises(ValueError, match="NaN"):
        hive.entropy_gate([0.1, np.nan])
    with pytest.raises(ValueError, match="hive.gate"):
        hive.entropy_gate([0.1], mode="mean")
    assert hive.entropy_gate([]).tolist() == []


def test_prompt_entropy_averages_the_masked_positions():
    h = np.array([[1.0, 2.0, 3.0], [4.0, 8.0, 100.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
    np.testing.assert_allclose(hive.prompt_entropy(h, mask), [2.0, 6.0])
    with pytest.raises(ValueError, match="at least two tokens"):
        hive.prompt_entropy(h, np.zeros((2, 3), bool))


def test_entropy_score_normalises_history_and_scores_unseen_one():
    np.testing.assert_allclose(hive.entropy_score([1.0, 3.0, np.nan, 2.0]), [0.0, 1.0, 1.0, 0.5])


def test_stage1_mixes_the_two_scores():
    np.testing.assert_allclose(hive.stage1_keep_probability([0.2], [1.0], lam=0.75), [0.4])
    with pytest.raises(ValueError, match="hive.lam"):
        hive.stage1_keep_probability([0.2], [1.0], lam=2)


def test_running_pearson_matches_numpy_and_survives_a_round_trip():
    rng = np.random.default_rng(0)
    x = rng.random(300)
    y = 0.6 * x + 0.4 * rng.random(300)
    running = hive.RunningPearson()
    for chunk in range(3):
        running.add(x[chunk * 100:(chunk + 1) * 100], y[chunk * 100:(chunk + 1) * 100])
    assert running.value == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-9)
    restored = hive.RunningPearson()
    restored.load_state_dict(running.state_dict())
    assert restored.value == running.value
    assert np.isnan(hive.RunningPearson().value)
