import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from workers.problems.arithmetic import CHARSET, TASKS, builtin_task, export_verl_parquet
from workers.problems.dataset import read_dataset
from workers.problems.verifiers import get_verifier

PROMPT = re.compile(r"(\d+)([+*])(\d+)=")


def operands(record):
    a, op, b = PROMPT.fullmatch(record.prompt).groups()
    return a, op, b


def test_add_prompts_ask_for_the_sum_written_reversed():
    splits = builtin_task("add", seed=1, n_train=300, n_test=50)
    for record in splits.train + splits.test:
        a, op, b = operands(record)
        assert op == "+"
        assert record.ground_truth == str(int(a) + int(b))[::-1]
        assert 1 <= len(a) <= 5 and 1 <= len(b) <= 5
        assert record.difficulty == f"digits={max(len(a), len(b))}"
        assert record.data_source == "edgeplane/add"


def test_mul_prompts_multiply_up_to_four_digits_by_a_digit_from_2_to_9():
    splits = builtin_task("mul", seed=1, n_train=300, n_test=50)
    for record in splits.train + splits.test:
        a, op, b = operands(record)
        assert op == "*" and 2 <= int(b) <= 9
        assert 1 <= len(a) <= 4 and record.difficulty == f"digits={len(a)}"
        assert record.ground_truth == str(int(a) * int(b))[::-1]


def test_the_default_splits_are_pinned_so_keys_keep_their_meaning():
    # A change here renames every built-in prompt: old runs' keys would point elsewhere.
    add, mul = builtin_task("add").test[:2], builtin_task("mul").test[:2]
    assert [(r.key, r.prompt, r.ground_truth, r.difficulty) for r in add] == [
        ("edgeplane/add:0", "60755+38937=", "29699", "digits=5"),
        ("edgeplane/add:1", "29+76=", "501", "digits=2"),
    ]
    assert [(r.key, r.prompt, r.ground_truth) for r in mul] == [
        ("edgeplane/mul:0", "353*7=", "1742"),
        ("edgeplane/mul:1", "61*6=", "663"),
    ]


def test_every_difficulty_level_is_present_in_both_splits_in_equal_shares():
    splits = builtin_task("add", seed=0, n_train=250, n_test=50)
    train = Counter(r.difficulty for r in splits.train)
    test = Counter(r.difficulty for r in splits.test)
    assert set(train) == set(test) == {f"digits={k}" for k in range(1, 6)}
    assert set(test.values()) == {10}
    assert set(train.values()) == {50}


def test_a_small_level_gives_up_its_share_to_the_others():
    # 1-digit addition has only 100 distinct prompts.
    splits = builtin_task("add", seed=0, n_train=2000, n_test=200)
    train = Counter(r.difficulty for r in splits.train)
    assert train["digits=1"] == 100 - 40
    assert sum(train.values()) == 2000
    assert max(train.values()) - min(v for k, v in train.items() if k != "digits=1") <= 1


def test_the_same_seed_gives_the_same_splits_and_another_seed_different_ones():
    first = builtin_task("mul", seed=3, n_train=200, n_test=40)
    assert builtin_task("mul", seed=3, n_train=200, n_test=40) == first
    other = builtin_task("mul", seed=4, n_train=200, n_test=40)
    assert [r.prompt for r in other.train] != [r.prompt for r in first.train]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_no_prompt_repeats_within_or_across_splits(name):
    splits = builtin_task(name, seed=5, n_train=3000, n_test=300)
    prompts = [r.prompt for r in splits.train + splits.test]
    assert len(prompts) == len(set(prompts)) == 3300


def test_keys_are_data_source_and_index_unique_across_splits_test_first():
    splits = builtin_task("add", seed=0, n_train=30, n_test=10)
    assert [r.key for r in splits.test] == [f"edgeplane/add:{i}" for i in range(10)]
    assert [r.key for r in splits.train] == [f"edgeplane/add:{i}" for i in range(10, 40)]
    assert {r.split for r in splits.test} == {"test"}
    assert {r.split for r in splits.train} == {"train"}


def test_the_test_split_does_not_move_when_the_train_size_changes():
    small = builtin_task("add", seed=9, n_train=100, n_test=50)
    large = builtin_task("add", seed=9, n_train=5000, n_test=50)
    assert small.test == large.test


def test_each_level_numbers_its_items_one_to_one():
    for name, levels in (("add", (1, 2)), ("mul", (1, 2, 3, 4))):
        family = TASKS[name]
        for k in levels:
            items = [family.operands(k, i) for i in range(family.size(k))]
            assert len(set(items)) == len(items)
            if name == "add":
                assert all(max(len(str(a)), len(str(b))) == k for a, b in items)
            else:
                assert all(len(str(a)) == k for a, _ in items)


def test_asking_for_more_prompts_than_exist_fails():
    with pytest.raises(
        ValueError, match="80000 distinct prompts; n_train \\+ n_test asks for 80001"
    ):
        builtin_task("mul", n_train=80_001 - 10, n_test=10)
    assert len(builtin_task("mul", n_train=80_000 - 10, n_test=10).train) == 79_990


def test_an_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="add, add_aligned, mul"):
        builtin_task("sub")


def test_the_charset_covers_every_prompt_and_answer():
    for name in TASKS:
        splits = builtin_task(name, n_train=500, n_test=50)
        used = {c for r in splits.train + splits.test for c in r.prompt + r.ground_truth}
        assert used <= set(CHARSET)
    assert set(CHARSET) == set("0123456789+*=")


def test_the_exact_verifier_scores_the_ground_truth_correct():
    splits = builtin_task("add", n_train=10, n_test=5)
    verify = get_verifier(splits.verifier)
    assert all(verify(r.ground_truth, r.ground_truth) == 1.0 for r in splits.test)
    assert verify(splits.test[0].ground_truth[::-1] + "1", splits.test[0].ground_truth) == 0.0


def test_export_writes_verl_columns(tmp_path):
    path = tmp_path / "add.parquet"
    export_verl_parquet(builtin_task("add", n_train=5, n_test=2).test, path)
    table = pq.read_table(path)
    assert table.column_names == [
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
        "key",
    ]
    row = table.to_pylist()[0]
    assert row["prompt"] == [{"role": "user", "content": row["prompt"][0]["content"]}]
    assert row["ability"] == "arithmetic"
    assert row["reward_model"]["style"] == "rule"
    assert set(row["extra_info"]) == {"split", "index", "key", "difficulty"}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_export_round_trips_through_the_dataset_reader(tmp_path, name):
    splits = builtin_task(name, seed=2, n_train=100, n_test=20)
    records = splits.train + splits.test
    path = tmp_path / f"{name}.parquet"
    export_verl_parquet(records, path)
    back = read_dataset(path)
    fields = [(r.key, r.ground_truth, r.difficulty, r.split, r.index) for r in records]
    assert [(r.key, r.ground_truth, r.difficulty, r.split, r.index) for r in back] == fields
    assert [r.prompt[0]["content"] for r in back] == [r.prompt for r in records]


def test_the_export_command_writes_both_splits_readable_as_datasets(tmp_path):
    from workers.problems.arithmetic import builtin_task, main
    from workers.problems.dataset import read_dataset

    assert main(["mul", "--out", str(tmp_path), "--train", "30", "--test", "10"]) == 0
    train = read_dataset(tmp_path / "mul-train.parquet")
    test = read_dataset(tmp_path / "mul-test.parquet")
    expected = builtin_task("mul", seed=0, n_train=30, n_test=10)
    assert [r.key for r in train] == [r.key for r in expected.train]
    assert [r.ground_truth for r in test] == [r.ground_truth for r in expected.test]


@pytest.mark.parametrize(("seed", "n_train", "n_test", "levels"),
                         [(0, 4100, 500, ()), (1, 300, 50, (2, 3)), (7, 64, 16, (6,)), (3, 1000, 0, (2, 4, 5))])
def test_add_aligned_rl_splits_never_meet_the_warmup_stream(seed, n_train, n_test, levels):
    from workers.problems.arithmetic import TASKS, warmup_stream

    splits = builtin_task("add_aligned", seed=seed, n_train=n_train, n_test=n_test, levels=levels)
    records = splits.train + splits.test
    assert (len(splits.train), len(splits.test)) == (n_train, n_test)
    assert len({r.prompt for r in records}) == len(records)  # unique across both splits
    family = TASKS["add_aligned"]
    for r in records:
        a, b = r.prompt[:-1].split("+")
        level = int(r.difficulty.split("=")[1])
        assert len(a) == len(b) == level and (not levels or level in levels)  # equal width, zero-padded
        assert r.ground_truth == str(int(a) + int(b))[::-1]
        assert not family.reserved_for_warmup(int(a) * 10**level + int(b))  # never a warm-up problem
    stream = warmup_stream("add_aligned", seed)
    drawn = stream(2000)
    assert not {q for q, _ in drawn} & {r.prompt for r in records}
    assert all(answer == str(sum(map(int, q[:-1].split("+"))))[::-1] for q, answer in drawn)


def test_about_half_of_each_level_is_reserved_for_the_warmup():
    from workers.problems.arithmetic import TASKS

    family = TASKS["add_aligned"]
    share = sum(family.reserved_for_warmup(i) for i in range(20_000)) / 20_000
    assert 0.45 < share < 0.55
    assert not any(TASKS[name].reserved_for_warmup(i) for name in ("add", "mul") for i in range(100))


def test_an_unknown_level_is_refused_naming_the_levels():
    with pytest.raises(ValueError, match="levels 2, 3, 4, 5, 6"):
        builtin_task("add_aligned", levels=(1,))
