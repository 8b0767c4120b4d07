"""Launching a run on verl 0.9.1: data, reward adapter, hydra overrides, submission.

From a ``RunConfig`` and the cluster-side ``VerlOptions`` this module

1. exports the train and held-out prompts to verl's parquet format (``export_verl_parquet``
   writes the stable prompt key as a ``key`` column and as ``extra_info.key``);
2. points verl's custom reward function at ``workers.engines.verl.reward`` with the run's
   verifier as ``reward_kwargs``;
3. builds the hydra overrides of ``python -m verl.trainer.main_ppo``;
4. validates them by composing against verl's own ``ppo_trainer.yaml`` (``compose_overrides``);
5. starts the job: through the Ray Jobs API when a cluster address is given (the attempt id
   as ``submission_id``: a retried launch finds the job it already submitted instead of
   submitting twice), else as a local subprocess.

Every run goes through Edgeplane's trainer subclass (``trainer.EdgeplaneTrainer``, entry
``python -m workers.engines.verl.train``), which drives the selection pipeline and reports each
step to the control plane. GRPO (with Dr. GRPO) maps onto verl's options; the zero-variance
post-filter (DAPO's, or GRESO's / HIVE's) onto verl's ``algorithm.filter_groups``, so verl
refills filtered groups. An allocator (HORA) runs its two rollout phases in the trainer; with a
post-filter it is refused (verl's filter would evict a probe group before its allocation).
Any registered method runs whose layers the trainer drives generically; an advantage
method needs its adapter (``workers.engines.verl.methods``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.engines.config import ConfigError, FieldError, RunConfig
from workers.engines.verl import reward
from workers.engines.verl.report import ENV_TOKEN, ENV_TOKEN_FILE

if TYPE_CHECKING:
    from workers.selection.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[3]
REWARD_PATH = "pkg://workers.engines.verl.reward"
CHECKPOINT_CALLBACK = "workers.engines.verl.checkpoint.SelectionCheckpointCallback"
TRAIN_MODULE = "workers.engines.verl.train"  # the job: verl's main_ppo with our TaskRunner
DEFAULT_CPU_PROMPT_LENGTH = 64  # CPU mode, when the data was not measured (build_overrides alone)
LOGGERS = ("console", "file", "wandb", "tensorboard", "mlflow", "swanlab", "vemlp_wandb", "clearml", "trackio")


def _help(text: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    if default is dataclasses.MISSING:
        return field(metadata={"help": text}, **kwargs)
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class VerlOptions:
    """Where and how a run goes on a GPU cluster: what RunConfig does not say."""

    run_dir: str = _help("the run's folder: parquet, spool, logs (checkpoints too unless checkpoint_dir is set)")
    attempt_id: str = _help("the attempt's id: the Ray submission id and the experiment name", "attempt-1")
    model_path: str = _help("Hugging Face checkpoint on the cluster (default: RunConfig.model)", "")
    nnodes: int = _help("Ray nodes the job uses", 1)
    gpus_per_node: int = _help("GPUs per node", 8)
    rollout: str = _help("rollout engine (verl's actor_rollout_ref.rollout.name)", "vllm")
    tensor_parallel: int = _help("vLLM tensor parallel size per rollout replica", 1)
    gpu_memory_utilization: float = _help("vLLM's share of GPU memory (colocated with training)", 0.5)
    micro_batch_per_gpu: int = _help("sequences per GPU per forward/backward pass (actor update, log-probs)", 4)
    checkpoint_dir: str = _help("verl's trainer.default_local_dir (default: RUN_DIR/checkpoints)", "")
    resume_mode: str = _help("auto (resume from the latest checkpoint), disable, or resume_path", "auto")
    loggers: tuple[str, ...] = _help("verl's trackers", ("console", "file"))
    ray_address: str = _help("Ray dashboard address (http://head:8265) for the Jobs API; empty: local subprocess", "")
    python: str = _help("the interpreter that runs verl", sys.executable)
    prompt_length: int = _help("longest prompt in tokens (CPU mode; 0: measured on the exported data)", 0)
    extra_overrides: tuple[str, ...] = _help("more hydra overrides, appended last (they win)", ())

    def checkpoints(self) -> str:
        return self.checkpoint_dir or str(Path(self.run_dir) / "checkpoints")


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    overrides: list[str]
    env: dict[str, str]  # for the job (not secrets: the run token is added at submission)
    train_file: Path
    val_file: Path
    submission_id: str

    def command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"{env} {shlex.join(self.argv)}".strip()


# -- data ---------------------------------------------------------------------------------------
def export_data(config: RunConfig, run_dir: Path) -> tuple[Path, Path]:
    """The run's train and held-out prompts as verl parquet under RUN_DIR/data."""
    from workers.problems.arithmetic import builtin_task, export_verl_parquet
    from workers.problems.dataset import read_dataset

    if config.dataset:
        train = read_dataset(config.dataset)
        test = read_dataset(config.eval_dataset) if config.eval_dataset else []
    else:
        splits = builtin_task(config.task, seed=config.seed, n_train=config.task_train_size,
                              n_test=config.task_test_size)
        train = splits.train
        test = read_dataset(config.eval_dataset) if config.eval_dataset else splits.test
    if config.eval_prompts:
        test = test[: config.eval_prompts]
    if not test:
        raise ConfigError([FieldError("eval_dataset", "verl needs held-out prompts: give eval_dataset")])
    data = run_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    train_file, val_file = data / "train.parquet", data / "val.parquet"
    export_verl_parquet(train, train_file)
    export_verl_parquet(test, val_file)
    return train_file, val_file


# -- overrides ----------------------------------------------------------------------------------
def _value(value: Any) -> str:
    """A hydra override value: lists as [a,b], strings quoted when they need it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, str):
        plain = value and all(c.isalnum() or c in "/._-:~" for c in value)
        return value if plain else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def check_supported(config: RunConfig, options: VerlOptions) -> None:
    errors: list[FieldError] = []
    from workers.engines.verl.methods import composition_problem, unsupported

    missing = unsupported(config.selectors)
    if missing:
        errors.extend(FieldError("selectors", problem) for problem in missing)
    else:
        problem = composition_problem(_pipeline(config))
        if problem:
            errors.append(FieldError("selectors", problem))
    if not (options.model_path or config.model != "tiny" or cpu_mode(config)):
        errors.append(FieldError("model", "verl trains Hugging Face checkpoints: set model or the model path "
                                          "('tiny' is built for device: cpu only)"))
    if config.batch_size % config.minibatches:
        errors.append(FieldError("minibatches", f"must divide batch_size ({config.batch_size}) for verl"))
    bad_loggers = [name for name in options.loggers if name not in LOGGERS]
    if bad_loggers:
        errors.append(FieldError("loggers", f"unknown {', '.join(bad_loggers)}; verl has {', '.join(LOGGERS)}"))
    if options.nnodes < 1 or options.gpus_per_node < 1:
        errors.append(FieldError("nnodes", "nnodes and gpus_per_node must be >= 1"))
    if options.micro_batch_per_gpu < 1:
        errors.append(FieldError("micro_batch_per_gpu", "must be >= 1"))
    if errors:
        raise ConfigError(errors)


def build_overrides(config: RunConfig, options: VerlOptions, train_file: Path, val_file: Path) -> list[str]:
    """RunConfig + VerlOptions as hydra overrides of verl's ppo_trainer.yaml."""
    from workers.engines.verl.methods import ADVANTAGE_ADAPTERS

    methods = config.selector_params()
    pipeline = _pipeline(config)
    # verl computes GRPO itself: the advantage method's normalisation is verl's option.
    norm_by_std = ADVANTAGE_ADAPTERS[pipeline.advantage.name].norm_by_std(pipeline.advantage.params)
    o: dict[str, Any] = {
        "data.train_files": str(train_file),
        "data.val_files": str(val_file),
        "data.train_batch_size": config.batch_size,
        "data.max_response_length": config.max_new_tokens,
        "data.seed": config.seed,
        "actor_rollout_ref.model.path": options.model_path or config.model_dir(),
        "actor_rollout_ref.rollout.name": options.rollout,
        "actor_rollout_ref.rollout.n": config.group_size,
        "actor_rollout_ref.rollout.temperature": config.temperature,
        "actor_rollout_ref.rollout.top_p": config.top_p,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": options.tensor_parallel,
        "actor_rollout_ref.rollout.gpu_memory_utilization": options.gpu_memory_utilization,
        "actor_rollout_ref.rollout.val_kwargs.n": config.eval_k,
        "actor_rollout_ref.rollout.val_kwargs.do_sample": True,
        "actor_rollout_ref.rollout.val_kwargs.temperature": config.temperature,
        "actor_rollout_ref.actor.optim.lr": config.lr,
        # verl reads lr_warmup_steps <= 0 as "use lr_warmup_steps_ratio" (0.0: no warm-up).
        "actor_rollout_ref.actor.optim.lr_warmup_steps": config.lr_warmup_steps or -1,
        "actor_rollout_ref.actor.optim.weight_decay": config.weight_decay,
        "actor_rollout_ref.actor.clip_ratio_low": config.clip_low,
        "actor_rollout_ref.actor.clip_ratio_high": config.clip_high,
        # verl 0.9.1's FSDP engine clips with optim.clip_grad; actor.grad_clip is read by nothing
        "actor_rollout_ref.actor.optim.clip_grad": config.grad_clip,
        "actor_rollout_ref.actor.ppo_mini_batch_size": config.batch_size // config.minibatches,
        # verl requires a micro batch (or dynamic batch sizes) for every forward/backward pass
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": options.micro_batch_per_gpu,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": options.micro_batch_per_gpu,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": options.micro_batch_per_gpu,
        "actor_rollout_ref.actor.loss_agg_mode": "seq-mean-token-sum-norm" if config.dr_grpo else "token-mean",
        "actor_rollout_ref.actor.use_kl_loss": False,
        "algorithm.adv_estimator": "grpo",
        "algorithm.norm_adv_by_std_in_grpo": norm_by_std,
        "algorithm.use_kl_in_reward": False,
        "reward.custom_reward_function.path": REWARD_PATH,
        "reward.custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": config.steps,
        # fit also ends after total_epochs passes over the data (default 30): at least one
        # step per epoch, so `steps` epochs never end a run before its steps do
        "trainer.total_epochs": max(config.steps, 1),
        # test_freq=-1 would skip the end-of-training validation too: eval_every 0 means "at the end"
        "trainer.test_freq": config.eval_every or config.steps,
        "trainer.save_freq": config.checkpoint_every or config.steps,
        "trainer.resume_mode": options.resume_mode,
        "trainer.default_local_dir": options.checkpoints(),
        "trainer.nnodes": options.nnodes,
        "trainer.n_gpus_per_node": options.gpus_per_node,
        "trainer.logger": list(options.loggers),
        "trainer.project_name": "edgeplane",
        "trainer.experiment_name": options.attempt_id,
    }
    o["trainer.checkpoint_callback_class"] = CHECKPOINT_CALLBACK
    post_filter = pipeline.post_filter
    if post_filter is not None:
        o["algorithm.filter_groups.enable"] = True
        o["algorithm.filter_groups.metric"] = "reward"  # V1: the canonical reward in rm_scores
        o["algorithm.filter_groups.max_num_gen_batches"] = int(post_filter.max_rounds())
        # V1 draws replacement batches as groups are filtered; in flight at once, in units of B:
        o["algorithm.filter_groups.max_inflight_gen_batches"] = max(1, round(float(post_filter.round_factor())))
    overrides = [f"{key}={_value(value)}" for key, value in o.items()]
    # Keys verl's schema lacks are added with '+': the verifier for the reward adapter, and
    # the trainer's own section (the selection methods, the run's device-hour cap).
    overrides.append(f"+reward.custom_reward_function.reward_kwargs.verifier={_value(config.verifier)}")
    overrides.append(f"+edgeplane.methods={_value(json.dumps(methods, sort_keys=True))}")
    overrides.append(f"+edgeplane.audit_share={_value(float(config.audit_share))}")
    if config.max_device_hours:
        overrides.append(f"+edgeplane.max_device_hours={_value(float(config.max_device_hours))}")
    if cpu_mode(config):
        overrides.extend(cpu_overrides(prompt_length=options.prompt_length or DEFAULT_CPU_PROMPT_LENGTH,
                                       response_length=config.max_new_tokens, ray_address=options.ray_address))
    overrides.extend(options.extra_overrides)
    return overrides


def cpu_mode(config: RunConfig) -> bool:
    """``device: cpu``: verl's own loop on this machine's CPU (workers/engines/verl/cpu)."""
    return config.device == "cpu"


def cpu_overrides(**kwargs: Any) -> list[str]:
    from workers.engines.verl import cpu

    return cpu.cpu_overrides(**kwargs)


def post_filter_owner(config: RunConfig) -> str | None:
    """The method whose zero-variance post-filter runs (verl's group filter), or None."""
    return _pipeline(config).post_filter_owner


def _pipeline(config: RunConfig) -> Pipeline:
    """The run's selection pipeline, to ask what runs at each layer."""
    from workers.selection.pipeline import Pipeline

    return Pipeline(config.selector_params(), batch_size=config.batch_size, group_size=config.group_size)


class OverrideError(ValueError):
    """An override verl's schema refuses; the message is hydra's, naming the key."""


def verl_config_dir() -> str:
    import verl

    return str(Path(verl.__file__).parent / "trainer" / "config")


def _compose(overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=verl_config_dir(), version_base=None):
            return compose(config_name="ppo_trainer", overrides=list(overrides))
    except Exception as exc:  # hydra's ConfigCompositionException, OverrideParseException, ...
        cause = exc.__cause__ or exc
        raise OverrideError(f"verl's ppo_trainer.yaml refuses the overrides: {exc} ({cause})") from exc
    finally:
        GlobalHydra.instance().clear()


def _kind(value: Any) -> str:
    from omegaconf import DictConfig, ListConfig

    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "mapping"
    return "text"


def compose_overrides(overrides: Sequence[str]) -> Any:
    """verl's ppo_trainer.yaml with the overrides applied, as ``main_ppo`` would see it.

    Raises OverrideError when hydra refuses an override (unknown key without '+', bad
    syntax) or when a value's kind differs from verl's default for that key (hydra does not
    type-check plain YAML: ``trainer.nnodes=two`` would compose and fail on the cluster).
    """
    from omegaconf import OmegaConf

    composed = _compose(overrides)
    defaults = _compose([])
    problems = []
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith(("+", "~")) or "@" in key:
            continue
        default = OmegaConf.select(defaults, key, default=None)
        value = OmegaConf.select(composed, key, default=None)
        if default is None or value is None:
            continue
        if _kind(default) != _kind(value):
            problems.append(f"{key}: verl expects a {_kind(default)} (default {default!r}), got {value!r}")
    if problems:
        raise OverrideError("verl's ppo_trainer.yaml refuses the overrides: " + "; ".join(problems))
    return composed


def validate_with_verl(composed: Any) -> None:
    """verl's own config check (``verl.utils.config.validate_config``, what ``main_ppo`` runs
    first on the cluster): batch sizes against GPUs, micro batches, and the rest."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    try:
        validate_config(config=composed, use_reference_policy=need_reference_policy(composed),
                        use_critic=need_critic(composed))
    except Exception as exc:  # AssertionError, ValueError, hydra's InstantiationException
        raise OverrideError(f"verl's config check refuses the job: {exc}") from exc


# -- the plan and its submission ----------------------------------------------------------------
TOKEN_FILE = ".run-token"


def write_token_file(run_dir: Path, token: str) -> Path:
    """The run token in RUN_DIR/.run-token, mode 0600 from its creation, replaced atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path, tmp = run_dir / TOKEN_FILE, run_dir / f"{TOKEN_FILE}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    os.replace(tmp, path)
    return path


def job_env(config: RunConfig, options: VerlOptions) -> dict[str, str]:
    run_dir = Path(options.run_dir)
    env = cpu_env() if cpu_mode(config) else {}
    return {**env,
        "PYTHONPATH": str(ROOT),  # our reward adapter must import inside Ray workers
        reward.ENV_VERIFIER: config.verifier,
        "VERL_FILE_LOGGER_PATH": str(run_dir / f"verl-metrics-{options.attempt_id}.jsonl"),  # new file per attempt
        "EDGEPLANE_RUN_DIR": str(run_dir),
    }


def cpu_env() -> dict[str, str]:
    from workers.engines.verl import cpu

    return cpu.cpu_env()


def prepare_cpu_mode(config: RunConfig, options: VerlOptions, train_file: Path, val_file: Path) -> VerlOptions:
    """CPU mode: verl 0.9.1 only; the tiny model built into the run's folder when the config
    says 'tiny'; the longest prompt measured with the model's own tokenizer and chat template."""
    from workers.engines.verl import cpu
    from workers.engines.verl.cpu.assets import ensure_tiny_model

    try:
        cpu.check_verl_version()
    except cpu.UnsupportedVerlVersion as exc:
        raise ConfigError([FieldError("device", str(exc))]) from exc
    model_path = options.model_path or config.model_dir()
    if model_path == "tiny":
        model_path = str(ensure_tiny_model(Path(options.run_dir) / "model"))
    prompt_length = options.prompt_length or longest_prompt(model_path, [train_file, val_file])
    return dataclasses.replace(options, model_path=model_path, prompt_length=prompt_length, gpus_per_node=1,
                               nnodes=1, rollout=cpu.rollout_name())


def longest_prompt(model_path: str, files: Sequence[Path]) -> int:
    """Tokens in the longest chat prompt of the parquet files, rounded up to a multiple of 8."""
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    longest = 1
    for path in files:
        for messages in pq.read_table(path, columns=["prompt"]).column("prompt").to_pylist():
            ids = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            longest = max(longest, len(ids))
    return -(-longest // 8) * 8


def plan(config: RunConfig, options: VerlOptions) -> LaunchPlan:
    """Export the data and build the command; nothing is started."""
    check_supported(config, options)
    run_dir = Path(options.run_dir)
    train_file, val_file = export_data(config, run_dir)
    if cpu_mode(config):
        options = prepare_cpu_mode(config, options, train_file, val_file)
    overrides = build_overrides(config, options, train_file, val_file)
    # hydra's own output folder goes to the run's folder, not to outputs/ in the working directory
    hydra_dir = f"hydra.run.dir={_value(str(run_dir / f'hydra-{options.attempt_id}'))}"
    argv = [options.python, "-m", TRAIN_MODULE, *overrides, hydra_dir]
    return LaunchPlan(argv=argv, overrides=overrides, env=job_env(config, options), train_file=train_file,
                      val_file=val_file, submission_id=options.attempt_id)


def submit(launch: LaunchPlan, options: VerlOptions, *, secrets: dict[str, str] | None = None,
           client_factory: Callable[[str], Any] | None = None,
           popen: Callable[..., Any] = subprocess.Popen) -> str:
    """Start the job; returns the Ray submission id, or ``pid:<n>`` for a local process.

    Secrets (the run token) go into the job's environment, never into the printed command.
    On Ray, whose dashboard shows a job's ``env_vars``, the token goes into a file readable
    by its owner only in the run's folder (shared storage), and the job gets the file's path.
    """
    env = {**launch.env, **(secrets or {})}
    if options.ray_address:
        token = env.pop(ENV_TOKEN, None)
        if token:
            env[ENV_TOKEN_FILE] = str(write_token_file(Path(options.run_dir), token))
        if client_factory is None:
            from ray.job_submission import JobSubmissionClient

            client_factory = JobSubmissionClient
        client = client_factory(options.ray_address)
        entrypoint = shlex.join(["python", *launch.argv[1:]])  # the cluster's interpreter
        runtime_env = {"working_dir": str(ROOT), "env_vars": {k: v for k, v in env.items() if k != "PYTHONPATH"},
                       "excludes": ["var/", ".venv/", "frontend/static/", "*.parquet", ".git/"]}
        try:
            return client.submit_job(entrypoint=entrypoint, submission_id=launch.submission_id,
                                     runtime_env=runtime_env)
        except Exception as exc:
            # A retried launch: the attempt's job exists already. Ray answers with an error
            # naming the id; the job is ours, so supervise it instead of submitting twice.
            if "already exists" in str(exc) or "already been used" in str(exc):
                client.get_job_status(launch.submission_id)  # raises if it does not exist after all
                return launch.submission_id
            raise
    run_dir = Path(options.run_dir)
    with (run_dir / f"verl-{launch.submission_id}.log").open("ab") as log:  # the child keeps its own copy
        process = popen(launch.argv, cwd=str(ROOT), env={**os.environ, **env}, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True)
    return f"pid:{process.pid}"
