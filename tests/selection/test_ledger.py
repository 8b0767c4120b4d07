import numpy as np
import pytest

from workers.selection.ledger import Bucket, PromptLedger


def test_it_records_streaks_p0_ema_and_the_visit_trace():
    ledger = PromptLedger(capacity=2, history=3)
    for step, (s, g) in enumerate([(8, 8), (8, 8), (3, 8), (0, 8), (0, 8)]):
        ledger.observe(["math:1"], [s], [g], step=step, response_entropy=[0.5 + step])
    slot = ledger.slots(["math:1"], create=False)
    col = ledger.column
    assert col("visits")[slot].tolist() == [5]
    assert col("p0")[slot].tolist() == [1.0]
    assert col("trailing_easy")[slot].tolist() == [0]
    assert col("trailing_hard")[slot].tolist() == [2]
    assert col("last_step")[slot].tolist() == [4]
    np.testing.assert_allclose(ledger.trace(slot), [[0.375, 0.0, 0.0]])  # the last three visits
    np.testing.assert_allclose(ledger.mean_response_entropy(slot), [2.5])
    ema = 1.0
    for p in [1.0, 1.0, 0.375, 0.0, 0.0]:
        ema = 0.9 * ema + 0.1 * p
    assert col("ema")[slot][0] == pytest.approx(ema)


def test_unknown_keys_are_not_created_on_lookup_and_keys_must_be_strings():
    ledger = PromptLedger()
    assert ledger.slots(["nope"], create=False).tolist() == [-1]
    assert len(ledger) == 0
    with pytest.raises(ValueError, match="non-empty strings"):
        ledger.slots([""])


def test_a_key_repeated_in_one_update_is_applied_in_order():
    ledger = PromptLedger()
    ledger.observe(["a", "b", "a"], [4, 0, 0], [4, 4, 4], step=0)
    slot = ledger.slots(["a"])
    assert ledger.column("visits")[slot].tolist() == [2]
    assert ledger.column("last_pass_rate")[slot].tolist() == [0.0]
    assert ledger.column("p0")[slot].tolist() == [1.0]
    assert ledger.column("trailing_hard")[slot].tolist() == [1]


def test_it_rejects_impossible_counts():
    with pytest.raises(ValueError, match="successes <= size"):
        PromptLedger().observe(["a"], [5], [4], step=0)


def test_it_grows_past_its_capacity_keeping_the_old_rows():
    ledger = PromptLedger(capacity=4)
    keys = [f"k{i}" for i in range(1000)]
    ledger.observe(keys, np.arange(1000) % 9, np.full(1000, 8), step=3)
    assert len(ledger) == 1000
    assert ledger.column("last_pass_rate")[9] == 0.0
    assert ledger.column("last_pass_rate")[7] == pytest.approx(7 / 8)


def test_save_and_load_restore_every_column_bit_exactly(tmp_path):
    rng = np.random.default_rng(0)
    ledger = PromptLedger(capacity=8)
    keys = [f"data:{i}" for i in range(300)]
    for step in range(5):
        pick = rng.choice(300, 60, replace=False)
        ledger.observe([keys[i] for i in pick], rng.integers(0, 9, 60), np.full(60, 8), step=step,
                       epoch=step // 2, response_entropy=rng.random(60))
    ledger.set_prompt_entropy(ledger.slots(keys[:10]), rng.random(10))
    ledger.set_pruned(ledger.slots(keys[:3]), True)
    ledger.method_state["greso"] = {"p_easy": 0.47}
    ledger.save(tmp_path / "ledger.npz")
    restored = PromptLedger.load(tmp_path / "ledger.npz")
    assert restored.keys == ledger.keys
    before, after = ledger.state_dict(), restored.state_dict()
    for name, value in before.items():
        if isinstance(value, np.ndarray):
            assert value.dtype == after[name].dtype
            assert value.tobytes() == after[name].tobytes(), name  # NaNs included
        else:
            assert value == after[name]
    assert not (tmp_path / "ledger.npz.partial").exists()


def test_buckets_place_each_prompt_against_the_learning_edge():
    ledger = PromptLedger()
    ledger.observe(["easy", "hard", "edge", "old"], [8, 0, 3, 3], [8, 8, 8, 8], step=100)
    ledger.observe(["old"], [3], [8], step=1)  # its last visit was long ago
    ledger.observe(["old"], [3], [8], step=1)
    ledger.slots(["new"])
    ledger.set_pruned(ledger.slots(["easy"]), True)
    names = [Bucket.NAMES[b] for b in ledger.buckets(ledger.slots(["easy", "hard", "edge", "old", "new"]), step=120)]
    assert names == ["pruned", "too_hard", "edge", "stale", "unseen"]


def test_close_epoch_counts_consecutive_solved_epochs():
    ledger = PromptLedger()
    ledger.observe(["a", "b"], [8, 8], [8, 8], step=0, epoch=0)
    ledger.close_epoch(0)
    ledger.observe(["a", "b"], [8, 7], [8, 8], step=1, epoch=1)
    ledger.close_epoch(1)
    assert ledger.column("epoch_streak").tolist() == [2, 0]
