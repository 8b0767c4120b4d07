"""Built-in verifiable problem sets for a tiny character-level GPT: reversed-answer arithmetic.

A task (the run config's ``task`` key, e.g. "add_aligned") names one ProblemFamily in
``TASKS``; ``builtin_task`` draws its train and test splits.

Prompts are plain text such as "347+85=" and the answer is the result written reversed
("432" -> "234"): a left-to-right model then emits the low digit first, the order in
which carries happen, which spreads difficulty well on a tiny model. Score with the
"exact" verifier. Each difficulty level (digit count) is drawn equally often, and every
prompt is unique across both splits.

``add_aligned`` is the testbed the benchmark and the demo train on: both operands written
at the level's width ("347+085="), 2 to 6 digits. Half of every level's problems (a fixed
hash of the problem's number) is reserved for the supervised warm-up, which draws a fresh
stream from that half (``warmup_stream``); the RL splits are drawn from the other half. So
RL starts from competence the model generalised, never from memorised answers, and one
cached warm-up serves every split size, level subset and RL seed.

Keys are `data_source:index`; indices run over the test split first (0..n_test-1), then
train, so keys are unique across splits and the test split does not move when n_train
changes.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from workers.problems.dataset import PromptRecord

CHARSET = "0123456789+*="  # every character of a built-in prompt or answer


@dataclass(frozen=True)
class ProblemFamily:
    """One arithmetic family: level k's items are numbered 0..size(k)-1 by `operands`."""

    name: str
    symbol: str
    levels: tuple[int, ...]
    size: Callable[[int], int]
    operands: Callable[[int, int], tuple[int, int]]
    apply: Callable[[int, int], int]
    aligned: bool = False  # both operands written at the level's width, zero-padded
    # Levels the supervised warm-up stream draws from, with weights; empty: the warm-up
    # trains on the train split itself (the older families).
    warmup_mix: tuple[tuple[int, float], ...] = ()

    @property
    def data_source(self) -> str:
        return f"edgeplane/{self.name}"

    def prompt(self, level: int, a: int, b: int) -> str:
        if self.aligned:
            return f"{a:0{level}d}{self.symbol}{b:0{level}d}="
        return f"{a}{self.symbol}{b}="

    def answer(self, a: int, b: int) -> str:
        return str(self.apply(a, b))[::-1]

    def reserved_for_warmup(self, i: int) -> bool:
        """Whether problem i of a level belongs to the warm-up half (families with a stream)."""
        return bool(self.warmup_mix) and (i * 2654435761) % 2**32 < 2**31  # Knuth's multiplicative hash

    def rl_size(self, level: int) -> int:
        """Problems of a level the RL splits may use (about half when a warm-up half is reserved)."""
        size = self.size(level)
        return size // 2 - size // 100 if self.warmup_mix else size


@dataclass(frozen=True)
class ProblemSplits:
    name: str
    train: list[PromptRecord]
    test: list[PromptRecord]
    verifier: str = "exact"


def _bounds(k: int) -> tuple[int, int]:
    """k-digit numbers run from low to high - 1; 0 counts as a 1-digit number."""
    high = int(10**k)
    return (0 if k == 1 else high // 10), high


def _add_size(k: int) -> int:
    # Pairs below 10**k whose longer operand has exactly k digits.
    low, high = _bounds(k)
    return high * high - low * low


def _add_operands(k: int, i: int) -> tuple[int, int]:
    # First the pairs whose left operand has k digits, then those whose right one does.
    low, high = _bounds(k)
    wide = high - low
    if i < wide * high:
        return low + i // high, i % high
    i -= wide * high
    return i // wide, low + i % wide


def _mul_size(k: int) -> int:
    low, high = _bounds(k)
    return (high - low) * 8


def _mul_operands(k: int, i: int) -> tuple[int, int]:
    low, _ = _bounds(k)
    return low + i // 8, 2 + i % 8  # a k-digit number times a digit 2..9


def _aligned_size(k: int) -> int:
    return int(10 ** (2 * k))  # every pair of k-digit strings, leading zeros allowed


def _aligned_operands(k: int, i: int) -> tuple[int, int]:
    return divmod(i, int(10**k))


TASKS: dict[str, ProblemFamily] = {
    "add": ProblemFamily("add", "+", (1, 2, 3, 4, 5), _add_size, _add_operands, lambda a, b: a + b),
    "mul": ProblemFamily("mul", "*", (1, 2, 3, 4), _mul_size, _mul_operands, lambda a, b: a * b),
    "add_aligned": ProblemFamily("add_aligned", "+", (2, 3, 4, 5, 6), _aligned_size, _aligned_operands,
                                 lambda a, b: a + b, aligned=True,
                                 warmup_mix=((2, 2.0), (3, 2.0), (4, 1.0), (5, 1.0), (6, 0.5))),
}


def warmup_stream(name: str, seed: int) -> Callable[[int], list[tuple[str, str]]] | None:
    """A function drawing n fresh (prompt, answer) pairs of the family's warm-up mix, all from
    the warm-up half (never an RL prompt); None when the family has no warm-up stream."""
    family = TASKS.get(name)
    if family is None or not family.warmup_mix:
        return None
    levels = [level for level, _ in family.warmup_mix]
    weights = [weight for _, weight in family.warmup_mix]
    rng = random.Random(f"{family.data_source}:{seed}:warmup")

    def draw(n: int) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while len(out) < n:
            level = rng.choices(levels, weights)[0]
            i = rng.randrange(family.size(level))
            if family.reserved_for_warmup(i):
                a, b = family.operands(level, i)
                out.append((family.prompt(level, a, b), family.answer(a, b)))
        return out

    return draw


def _draw_rl(rng: random.Random, family: ProblemFamily, level: int, n: int, skip: set[int]) -> list[int]:
    """n distinct problem numbers of a level outside the warm-up half and outside ``skip``."""
    out: list[int] = []
    seen = set(skip)
    size = family.size(level)
    while len(out) < n:
        for i in rng.sample(range(size), min(size, 2 * (n - len(out)) + 16)):
            if i not in seen and not family.reserved_for_warmup(i):
                seen.add(i)
                out.append(i)
                if len(out) == n:
                    break
    return out


def builtin_task(name: str, *, seed: int = 0, n_train: int = 2000, n_test: int = 200,
                 levels: Sequence[int] = ()) -> ProblemSplits:
    """Deterministic train/test splits of a family for (name, seed, n_train, n_test, levels);
    ``levels`` keeps only those difficulty levels (digit counts; empty: all)."""
    family = TASKS.get(name)
    if family is None:
        raise ValueError(f"unknown task {name!r}; valid: {', '.join(sorted(TASKS))}")
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    unknown = sorted(set(levels) - set(family.levels))
    if unknown:
        raise ValueError(f"task {name!r} has levels {', '.join(map(str, family.levels))}; not {unknown}")
    if levels:
        family = dataclasses.replace(family, levels=tuple(k for k in family.levels if k in set(levels)))
    sizes = [family.rl_size(k) for k in family.levels]
    if n_train + n_test > sum(sizes):
        raise ValueError(
            f"task {name!r} has {sum(sizes)} distinct prompts; n_train + n_test asks for "
            f"{n_train + n_test}"
        )
    test_quota = _spread(n_test, sizes)
    train_quota = _spread(n_train, [s - q for s, q in zip(sizes, test_quota, strict=True)])
    # The test draw uses its own stream, so it depends on n_test only.
    test_rng = random.Random(f"{family.data_source}:{seed}:test")
    train_rng = random.Random(f"{family.data_source}:{seed}:train")
    test_items: list[tuple[int, int]] = []
    train_items: list[tuple[int, int]] = []
    for level, size, n_te, n_tr in zip(family.levels, sizes, test_quota, train_quota, strict=True):
        if family.warmup_mix:
            taken = _draw_rl(test_rng, family, level, n_te, set())
            test_items += [(level, i) for i in taken]
            train_items += [(level, i) for i in _draw_rl(train_rng, family, level, n_tr, set(taken))]
            continue
        taken = test_rng.sample(range(size), n_te)
        test_items += [(level, i) for i in taken]
        # Draw enough to cover the test items we must skip; sample() never repeats.
        seen = set(taken)
        fresh = [i for i in train_rng.sample(range(size), n_tr + n_te) if i not in seen]
        train_items += [(level, i) for i in fresh[:n_tr]]
    test_rng.shuffle(test_items)  # mix levels, so any prefix covers all difficulties
    train_rng.shuffle(train_items)
    test = _records(family, test_items, "test", start=0)
    train = _records(family, train_items, "train", start=n_test)
    return ProblemSplits(name=name, train=train, test=test)


def _spread(n: int, caps: Sequence[int]) -> list[int]:
    """Split n as evenly as caps allow (water-filling); levels that run out pass the rest on."""
    quotas = [0] * len(caps)
    open_levels = [i for i, c in enumerate(caps) if c > 0]
    left = n
    while left and open_levels:
        share, extra = divmod(left, len(open_levels))
        for rank, i in enumerate(open_levels):
            take = min(caps[i] - quotas[i], share + (rank < extra))
            quotas[i] += take
            left -= take
        open_levels = [i for i in open_levels if quotas[i] < caps[i]]
    assert not left, "callers check n <= sum(caps)"
    return quotas


def _records(
    family: ProblemFamily, items: list[tuple[int, int]], split: str, start: int
) -> list[PromptRecord]:
    records = []
    for offset, (level, i) in enumerate(items):
        a, b = family.operands(level, i)
        index = start + offset
        records.append(
            PromptRecord(
                key=f"{family.data_source}:{index}",
                prompt=family.prompt(level, a, b),
                ground_truth=family.answer(a, b),
                data_source=family.data_source,
                index=index,
                difficulty=f"digits={level}",
                split=split,
            )
        )
    return records


def export_verl_parquet(records: Iterable[PromptRecord], path: str | Path) -> None:
    """Write records as a Parquet file in verl's RL dataset format (plus a top-level key)."""
    rows = [
        {
            "data_source": r.data_source,
            "prompt": r.prompt
            if isinstance(r.prompt, list)
            else [{"role": "user", "content": r.prompt}],
            "ability": "arithmetic",
            "reward_model": {"style": "rule", "ground_truth": r.ground_truth},
            "extra_info": {
                "split": r.split,
                "index": r.index,
                "key": r.key,
                "difficulty": r.difficulty,
            },
            "key": r.key,
        }
        for r in records
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=_VERL_SCHEMA), str(path))


_TEXT = pa.string()
_VERL_SCHEMA = pa.schema(
    [
        ("data_source", _TEXT),
        ("prompt", pa.list_(pa.struct([("role", _TEXT), ("content", _TEXT)]))),
        ("ability", _TEXT),
        ("reward_model", pa.struct([("style", _TEXT), ("ground_truth", _TEXT)])),
        (
            "extra_info",
            pa.struct(
                [("split", _TEXT), ("index", pa.int64()), ("key", _TEXT), ("difficulty", _TEXT)]
            ),
        ),
        ("key", _TEXT),
    ]
)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m workers.problems.arithmetic NAME --out DIR: export both splits as verl parquet."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workers.problems.arithmetic", description=main.__doc__)
    parser.add_argument("name", choices=sorted(TASKS))
    parser.add_argument("--out", type=Path, required=True, help="folder for NAME-train.parquet and NAME-test.parquet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=200)
    args = parser.parse_args(argv)
    splits = builtin_task(args.name, seed=args.seed, n_train=args.train, n_test=args.test)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in (("train", splits.train), ("test", splits.test)):
        path = args.out / f"{args.name}-{split}.parquet"
        export_verl_parquet(records, path)
        print(f"{path}: {len(records)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
