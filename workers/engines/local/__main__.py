"""Command line: python -m workers.engines.local --config FILE --out DIR [--steps N] [--resume]

Writes DIR/events.jsonl (one JSON event per line) and DIR/checkpoints/. Exit status:
0 succeeded, cancelled or budget-stopped; 1 failed; 2 bad config or dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from workers.engines.config import ConfigError, RunConfig
from workers.engines.telemetry import JsonlSink
from workers.problems.dataset import DatasetError
from workers.record import RunStatus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.engines.local", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path, help="run config, YAML or JSON")
    parser.add_argument("--out", required=True, type=Path, help="output folder: events.jsonl and checkpoints/")
    parser.add_argument("--steps", type=int, help="override the config's steps")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--var", type=Path, default=Path(os.environ.get("EDGEPLANE_VAR_DIR", "var")),
                        help="cache folder for the warm-up (default var/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = RunConfig.load(args.config)
        if args.steps is not None:
            config = RunConfig.from_mapping({**dataclasses.asdict(config), "steps": args.steps})
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from workers.engines.local.engine import LocalEngine

    sink = JsonlSink(args.out)
    try:
        engine = LocalEngine(config, args.out, sink, var_dir=args.var)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.resume and sink.path.exists():
        print(f"error: {args.out} already holds a run: pass --resume to continue it, or choose another --out",
              file=sys.stderr)
        return 2
    if args.resume:
        checkpoint = engine.checkpoint_dir / "latest"
        if not checkpoint.is_file():
            print(f"error: --resume, but {checkpoint} does not exist: run without --resume first", file=sys.stderr)
            return 2
        sink.truncate_after(engine.saved_step())
    status = engine.run(resume=args.resume)
    print(f"{status}: {args.out / 'events.jsonl'}")
    return 1 if status == RunStatus.FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
