"""verl's platform for a machine with no accelerator: torch's CPU device, gloo collectives.

verl 0.9.1 (``verl/plugin/platform``) registers nvidia, npu and rocm only and falls back to
nvidia on an unknown machine. ``PlatformCPU`` is registered as ``cpu`` and chosen with
``VERL_PLATFORM=cpu``. Ray schedules verl's worker bundles on an accelerator resource: this
platform names Ray's logical ``GPU`` resource, which the CPU mode declares on the cluster
(``ray_init.num_gpus``) without any GPU behind it.
"""

from __future__ import annotations

from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

NAME = "cpu"


class _CPUDeviceModule:
    """What verl calls on ``torch.<device>`` (``get_torch_device()``), as no-ops on the CPU.

    ``torch.cpu`` has ``synchronize``, ``current_device`` and ``device_count`` but not the memory
    and seeding calls verl makes on every device module; those do nothing here.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # never pretend to be abstract, awaitable, ...
        real = getattr(torch.cpu, name, None)
        if real is not None:
            return real
        return _noop

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def current_device() -> int:
        return 0

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def get_device_name(*args: Any, **kwargs: Any) -> str:
        return "CPU"  # verl's flops counter looks the peak FLOPs up by this name

    @staticmethod
    def memory_allocated(*args: Any, **kwargs: Any) -> int:
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def mem_get_info(*args: Any, **kwargs: Any) -> tuple[int, int]:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


@PlatformRegistry.register(platform=NAME)
class PlatformCPU(PlatformBase):
    """Every tensor on ``cpu``; collectives on gloo; Ray's logical ``GPU`` resource for bundles."""

    _module = _CPUDeviceModule()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return self._module  # type: ignore[return-value]

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # chosen only by name (VERL_PLATFORM=cpu), never by auto-detection

    def current_device(self) -> str:  # type: ignore[override]
        # verl moves tensors with .to(get_device_id()): an index would mean an accelerator
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "EDGEPLANE_CPU_VISIBLE_DEVICES"  # nothing reads it; Ray sets no such variable

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"  # logical: declared by ray_init.num_gpus, no device behind it

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
