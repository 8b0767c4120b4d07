"""The built-in warm start, remade from scratch, behaves as the shipped one.

Remakes the default warm-up on add_aligned (workers/engines/local/warm_start_remake.py: 4,900
supervised steps, minutes on 2 cores) into a temporary folder, then compares it with the shipped
warm start (workers/engines/local/warm_starts/): the key, the pass@1 per level (greedy and
sampled, full and half precision, the same held-out prompts and seeds as the manifest), and how
far the weights moved. Passes when every level is within TOLERANCE of the shipped manifest's.
The load average is recorded: the machine may be shared (the figures do not depend on it; the
seconds do).

Run: .venv/bin/python bench/warm_start.py [--out DIR]
Writes bench/results/warm_start.json (or DIR/warm_start.json). Exit 1 when it does not pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._timing import write_results
from workers.engines.local import warm_start
from workers.engines.local.warm_start_remake import differences, remake

TOLERANCE = 0.05  # pass@1, absolute, per level and mode (tests/engines/local/test_warm_start.py uses the same)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="warm-start-bench-") as folder:
        remade = remake(out=Path(folder), prune=False)  # the whole held-out split, as the shipped one's
        new = torch.load(Path(folder) / f"{remade['key']}.pt", weights_only=True)["model"]
    (shipped,) = warm_start.manifests()
    assert remade["evaluation"] == shipped["evaluation"], "measured on other prompts or seeds than the shipped one"
    old = torch.load(warm_start.SHIPPED / f"{shipped['key']}.pt", weights_only=True)["model"]
    seconds = time.perf_counter() - start
    moved = max(float((new[k].float() - old[k].float()).abs().max()) for k in old)
    gaps = {precision: differences(remade["pass_rates"][precision], shipped["pass_rates"][precision])
            for precision in ("float32", "float16")}
    worst = max(max(g.values()) for g in gaps.values())
    passed = remade["key"] == shipped["key"] and worst <= TOLERANCE
    print(f"remade {remade['key']} (shipped {shipped['key']}) in {seconds:.0f} s, {torch.get_num_threads()} threads, "
          f"load {os.getloadavg()[0]:.2f}")
    for precision in ("float32", "float16"):
        for mode in ("greedy", "sampled"):
            now, then = remade["pass_rates"][precision][mode], shipped["pass_rates"][precision][mode]
            print(f"  {precision} {mode:7s} " + "  ".join(f"{level} {now[level]:.3f} ({then[level]:.3f})"
                                                         for level in now))
    print(f"largest pass@1 gap {worst:.4f} (tolerance {TOLERANCE}); largest weight change {moved:.3g}; "
          f"{'PASS' if passed else 'FAIL'}")
    path = write_results("warm_start", {
        "shipped_key": shipped["key"], "remade_key": remade["key"], "tolerance": TOLERANCE, "passed": passed,
        "largest_gap": worst, "largest_weight_change": moved, "gaps": gaps,
        "pass_rates": {"remade": remade["pass_rates"], "shipped": shipped["pass_rates"]},
        "warmup_seconds": remade["warmup_seconds"], "seconds": seconds, "bytes": remade["bytes"],
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "torch": torch.__version__,
        "shipped_made_with": {"torch": shipped["torch"], "threads": shipped.get("torch_threads")},
    }, args.out)
    print(f"wrote {path}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
