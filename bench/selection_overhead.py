"""How much the selectors cost per step, at the scale of a large run.

Prints and writes bench/results/selection_overhead.json:
- LZE energy + Gumbel top-K over 1,000,000 groups (aim < 30 ms on 2 cores);
- GRESO / HIVE stage 1 (keep probability + Bernoulli draw) over a 1,000,000-prompt ledger
  (aim < 20 ms), with HIVE's entropy-history term (lam < 1) beside it;
- a ledger update of 1,024 groups in that ledger (aim < 2 ms);
- HORA allocation of 1,024 prompts x 24 extra rollouts, exact (aim < 5 ms), beside a
  heap greedy of 24,576 pops for scale.
Each figure is the median over repeats. Run: .venv/bin/python bench/selection_overhead.py
"""

from __future__ import annotations

import argparse
import heapq
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import median_ms, write_results
from workers.selection import greso, hive, hora, lze
from workers.selection.ledger import PromptLedger

AIMS_MS = {"lze_score_select_1m": 30, "stage1_1m": 20, "ledger_update_1024": 2, "hora_1024x24": 5}


def build_ledger(n: int, rng: np.random.Generator) -> tuple[PromptLedger, list[str]]:
    ledger = PromptLedger(capacity=n)
    keys = [f"dapo-math:{i}" for i in range(n)]
    for step in range(3):  # three visits each: realistic streaks, EMA and entropy history
        ledger.observe(keys, rng.integers(0, 9, n), np.full(n, 8), step=step, epoch=step,
                       response_entropy=rng.random(n))
    return ledger, keys


def heap_greedy(successes: np.ndarray, n_pre: int, budget: int) -> np.ndarray:
    a = 1.0 + successes
    b = 1.0 + n_pre - successes
    gains = (a / (a + b)).tolist()
    m = [1] * len(gains)
    heap = [(-g, i) for i, g in enumerate(gains)]
    heapq.heapify(heap)
    out = np.zeros(len(gains), dtype=np.int64)
    for _ in range(budget):
        _, i = heapq.heappop(heap)
        out[i] += 1
        gains[i] *= (b[i] + m[i] - 1) / (a[i] + b[i] + m[i])
        m[i] += 1
        heapq.heappush(heap, (-gains[i], i))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = args.prompts
    figures: dict[str, float] = {}

    # LZE: energy of every group and Gumbel top-K.
    p = rng.integers(0, 9, n) / 8
    p0 = rng.integers(0, 9, n) / 8
    ema = rng.random(n)
    live = (p > 0) & (p < 1)
    select_rng = np.random.default_rng(1)
    figures["lze_score_select_1m"] = median_ms(
        lambda: lze.select(lze.energy(p, p0, ema), live, rng=select_rng), args.repeats
    )

    # Stage 1 over the whole ledger.
    ledger, keys = build_ledger(n, rng)
    slots = np.arange(n)
    draw_rng = np.random.default_rng(2)
    easy, hard = ledger.column("trailing_easy"), ledger.column("trailing_hard")

    def stage1_greso() -> np.ndarray:
        keep = greso.keep_probability(easy[slots], hard[slots], 0.5, 0.5)
        return draw_rng.random(n) < keep

    def stage1_hive_entropy() -> np.ndarray:
        s_rew = greso.keep_probability(easy[slots], hard[slots], 0.5, 0.5)
        s_ent = hive.entropy_score(ledger.mean_response_entropy(slots))
        return draw_rng.random(n) < hive.stage1_keep_probability(s_rew, s_ent, lam=0.5)

    figures["stage1_1m"] = median_ms(stage1_greso, args.repeats)
    figures["stage1_hive_lam_0_5_1m"] = median_ms(stage1_hive_entropy, args.repeats)

    # One step's ledger update: 1,024 groups of the million.
    batches = [[keys[i] for i in rng.choice(n, 1024, replace=False)] for _ in range(args.repeats + 3)]
    successes = rng.integers(0, 9, 1024)
    sizes = np.full(1024, 8)
    entropy = rng.random(1024)
    step = iter(range(10, 10_000))
    batch_iter = iter(batches)
    figures["ledger_update_1024"] = median_ms(
        lambda: ledger.observe(next(batch_iter), successes, sizes, step=next(step), response_entropy=entropy),
        args.repeats,
    )

    # HORA: 1,024 prompts, n0 = 8, N = 32 -> 24 extra each.
    probe = rng.integers(0, 9, 1024)
    budget = 24 * 1024
    figures["hora_1024x24"] = median_ms(lambda: hora.allocate(probe, 8, budget), args.repeats)
    figures["hora_1024x24_heap_reference"] = median_ms(lambda: heap_greedy(probe, 8, budget), 5, warmup=1)
    skewed = np.r_[np.full(1023, 8), 0]  # one unsolved prompt among solved ones: a deep row
    figures["hora_1024x24_one_hard_prompt"] = median_ms(lambda: hora.allocate(skewed, 8, budget), args.repeats)
    assert hora.allocate(probe, 8, budget).tolist() == heap_greedy(probe, 8, budget).tolist()

    print(f"selection overhead, median of {args.repeats} ({n:,} prompts)")
    for name, value in figures.items():
        aim = AIMS_MS.get(name)
        verdict = "" if aim is None else f"  aim < {aim} ms: {'met' if value < aim else 'MISSED'}"
        print(f"  {name:34s} {value:9.3f} ms{verdict}")
    path = write_results("selection_overhead", {"prompts": n, "repeats": args.repeats,
                                                 "median_ms": figures, "aim_ms": AIMS_MS}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
