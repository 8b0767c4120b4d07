"""The verl engine's CPU mode: verl 0.9.1's own training loop on a machine with no GPU.

verl imports this module in every process of a run (driver, TaskRunner, actor workers,
rollout servers, reward workers) through its external-module hook
(``VERL_USE_EXTERNAL_MODULES``, read in ``verl/__init__.py``); ``cpu_env`` gives the job the
variables that turn it on. On import it

1. refuses any verl but 0.9.1, naming the version: the hooks below reach private parts of verl
   (the platform registry, the rollout registries, the process-group initialiser);
2. registers ``PlatformCPU`` (platform.py), chosen with ``VERL_PLATFORM=cpu``;
3. registers the transformers rollout backend (rollout.py) in verl's rollout registries under
   ``ROLLOUT_NAME``;
4. makes verl's process groups plain gloo: verl asks for ``cpu:gloo,<device>:<backend>``, which
   torch refuses when the device is the CPU itself ("Duplicate device type cpu").

``cpu_overrides`` are the hydra overrides that get past the rest (shared/VERL_CPU.md): logical
Ray resources, one TransferQueue storage unit, sdpa attention, FSDP2, float32, no compile.
"""

from __future__ import annotations

import functools
import os
from importlib import metadata

VERL_VERSION = "0.9.1"
MODULE = __name__
ENV = {
    "VERL_PLATFORM": "cpu",
    "VERL_USE_EXTERNAL_MODULES": MODULE,
    # verl's FSDP engine registers for devices cuda and npu only (workers/engine/base.py picks
    # the engine by this name); its tensors still go to the platform's device, the CPU.
    "VERL_ENGINE_DEVICE": "cuda",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",  # many Ray processes on few cores: one thread each
}


class UnsupportedVerlVersion(RuntimeError):
    pass


def check_verl_version(installed: str | None = None) -> None:
    installed = installed or metadata.version("verl")
    if installed != VERL_VERSION:
        raise UnsupportedVerlVersion(
            f"the verl engine's CPU mode is built for verl {VERL_VERSION}, and verl {installed} is installed: "
            f"it hooks into verl's platform and rollout registries, which change between versions. "
            f"Install verl=={VERL_VERSION} or run on GPUs (device: cuda)")


def cpu_env() -> dict[str, str]:
    """The environment of a CPU-mode job (every Ray process inherits it)."""
    return dict(ENV)


def rollout_name() -> str:
    from workers.engines.verl.cpu.rollout import ROLLOUT_NAME

    return ROLLOUT_NAME


def cpu_overrides(*, prompt_length: int, response_length: int, ray_address: str = "") -> list[str]:
    """verl overrides for a run on this machine's CPU (shared/VERL_CPU.md, stops 1-7).

    On a local Ray (no ``ray_address``) the job declares logical resources: verl's bundles ask
    {CPU: 3, GPU: 1} and the TaskRunner and TransferQueue actors hold CPUs too; without them
    the placement group never forms. A job on an existing cluster cannot declare resources:
    that cluster's nodes must offer them (``ray start --num-cpus=12 --num-gpus=1``). A local Ray
    starts without its dashboard: nothing of the job's reads it (the launcher supervises the
    local process, not a Ray job), and leaving it out cuts about 2.5 s of each job's start here.
    """
    resources = [] if ray_address else ["ray_kwargs.ray_init.num_cpus=12", "+ray_kwargs.ray_init.num_gpus=1",
                                        "+ray_kwargs.ray_init.include_dashboard=False"]
    return [
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=1",
        "trainer.nnodes=1",
        *resources,
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        f"actor_rollout_ref.rollout.name={rollout_name()}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "data.dataloader_num_workers=0",
        f"data.max_prompt_length={prompt_length}",
        f"actor_rollout_ref.rollout.prompt_length={prompt_length}",
        f"actor_rollout_ref.rollout.response_length={response_length}",
        f"actor_rollout_ref.rollout.max_model_len={prompt_length + response_length}",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.dtype=float32",
        "actor_rollout_ref.ref.fsdp_config.dtype=float32",
    ]


def _plain_gloo(init_process_group):
    @functools.wraps(init_process_group)
    def wrapper(*args, **kwargs):
        backend = kwargs.get("backend")
        if isinstance(backend, str) and "," in backend:
            parts = {part.split(":")[-1] for part in backend.split(",")}
            if parts == {"gloo"}:
                kwargs["backend"] = "gloo"
        return init_process_group(*args, **kwargs)

    wrapper.__edgeplane_plain_gloo__ = True  # type: ignore[attr-defined]
    return wrapper


def install() -> None:
    """Register the CPU platform and the transformers rollout with verl (idempotent)."""
    check_verl_version()
    import torch.distributed
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    from workers.engines.verl.cpu import platform  # noqa: F401  (registers PlatformCPU)
    from workers.engines.verl.cpu.rollout import ROLLOUT_NAME

    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{MODULE}.rollout.TransformersServerAdapter"

    def load_replica():
        from workers.engines.verl.cpu.rollout import TransformersReplica

        return TransformersReplica

    RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica)
    if os.environ.get("VERL_PLATFORM") == "cpu" and not getattr(
            torch.distributed.init_process_group, "__edgeplane_plain_gloo__", False):
        torch.distributed.init_process_group = _plain_gloo(torch.distributed.init_process_group)


if os.environ.get("VERL_USE_EXTERNAL_MODULES", "").split(",").count(MODULE):
    install()  # imported by verl itself, in a CPU-mode process
