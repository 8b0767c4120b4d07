"""python -m workers.engines.verl.submit --config run.yaml --run-dir DIR [--dry-run] [options]

Exports the data, builds verl's command and either prints it after composing the overrides
against verl's ppo_trainer.yaml (--dry-run) or starts the job (Ray Jobs API with --ray-address,
else a local subprocess). The trainer reports to the control plane when the job's environment
names it: $EDGEPLANE_CONTROL_URL, $EDGEPLANE_RUN_ID, $EDGEPLANE_RUN_TOKEN (and
$EDGEPLANE_ATTEMPT) are read here and passed to the job's environment only.
"""

from __future__ import annotations

import argparse
import os
import sys

from workers.engines.config import ConfigError, RunConfig
from workers.engines.verl.launch import (
    OverrideError,
    VerlOptions,
    compose_overrides,
    plan,
    submit,
    validate_with_verl,
)
from workers.engines.verl.report import ENV_ATTEMPT, ENV_RUN, ENV_TOKEN, ENV_URL

TELEMETRY_ENV = (ENV_URL, ENV_RUN, ENV_TOKEN, ENV_ATTEMPT)


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, VerlOptions]:
    p = argparse.ArgumentParser(prog="python -m workers.engines.verl.submit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="RunConfig as YAML or JSON")
    p.add_argument("--run-dir", required=True, help="the run's folder (data, logs, spool, checkpoints)")
    p.add_argument("--attempt-id", default="attempt-1", help="Ray submission id and experiment name")
    p.add_argument("--model-path", default="", help="HF checkpoint on the cluster (default: the config's model)")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--rollout", default="vllm")
    p.add_argument("--tensor-parallel", type=int, default=1)
    p.add_argument("--micro-batch-per-gpu", type=int, default=4,
                   help="sequences per GPU per forward/backward pass (lower it if GPU memory runs out)")
    p.add_argument("--checkpoint-dir", default="", help="default: RUN_DIR/checkpoints")
    p.add_argument("--resume-mode", default="auto", choices=["auto", "disable", "resume_path"])
    p.add_argument("--loggers", default="console,file", help="comma-separated verl trackers")
    p.add_argument("--ray-address", default=os.environ.get("EDGEPLANE_RAY_ADDRESS", ""),
                   help="Ray dashboard address for the Jobs API (default: $EDGEPLANE_RAY_ADDRESS)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs verl (local launch)")
    p.add_argument("--dry-run", action="store_true", help="print the command and validate it; start nothing")
    p.add_argument("overrides", nargs="*", help="more hydra overrides (they win)")
    args = p.parse_args(argv)
    options = VerlOptions(
        run_dir=args.run_dir, attempt_id=args.attempt_id, model_path=args.model_path, nnodes=args.nnodes,
        gpus_per_node=args.gpus_per_node, rollout=args.rollout, tensor_parallel=args.tensor_parallel,
        micro_batch_per_gpu=args.micro_batch_per_gpu,
        checkpoint_dir=args.checkpoint_dir, resume_mode=args.resume_mode,
        loggers=tuple(x for x in args.loggers.split(",") if x), ray_address=args.ray_address,
        python=args.python, extra_overrides=tuple(args.overrides))
    return args, options


def main(argv: list[str] | None = None) -> int:
    args, options = parse(argv)
    try:
        config = RunConfig.load(args.config)
        launch = plan(config, options)
        validate_with_verl(compose_overrides(launch.overrides))
    except (ConfigError, OverrideError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(launch.command())
    if args.dry_run:
        print(f"# {len(launch.overrides)} overrides compose against verl's ppo_trainer.yaml and pass its "
              "config check", file=sys.stderr)
        return 0
    secrets = {name: os.environ[name] for name in TELEMETRY_ENV if os.environ.get(name)}
    print(f"submitted: {submit(launch, options, secrets=secrets)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
