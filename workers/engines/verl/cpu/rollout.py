"""A rollout backend for verl 0.9.1 on transformers: what vLLM does in a GPU run, on the CPU.

verl's V1 loop reaches a rollout engine through three registered parts, and this module
supplies each under the name ``ROLLOUT_NAME`` (``actor_rollout_ref.rollout.name``):

- ``TransformersRolloutServer``: the server actor the agent loop calls,
  ``generate(prompt_ids, sampling_params, request_id, ...) -> TokenOutput`` (token ids, their
  log-probs, ``extra_fields["global_steps"]``), plus the control calls verl makes on a vLLM
  server (sleep, wake_up, clear_kv_cache, set_global_steps, abort/resume).
- ``TransformersReplica``: the ``RolloutReplica`` (``RolloutReplicaRegistry``) that starts one
  server per replica under the name the adapter looks up.
- ``TransformersServerAdapter``: the ``BaseRollout`` (rollout registry, ``(name, "async")``)
  built inside the actor worker; its ``update_weights`` pushes the FSDP state dict to the
  server, as vLLM's adapter pushes it over IPC. So the rollout samples from the weights the
  actor just trained (verl's ``training/rollout_probs_diff_*`` metrics compare the two).

Sampling is plain ancestral sampling with a KV cache, one request at a time: temperature,
top-k and top-p as vLLM applies them, log-probs of the temperature-scaled distribution (what
verl's actor computes for ``old_log_prob``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)
ROLLOUT_NAME = "transformers"
SERVER_PREFIX = "edgeplane_transformers_"
WEIGHT_SYNC_LOG = "transformers rollout: weight sync"


def server_name(replica_rank: int, suffix: str = "") -> str:
    return f"{SERVER_PREFIX}server_{replica_rank}_0{suffix}"


def _local_path(model_config: Any) -> str:
    for attr in ("local_path", "path"):
        value = model_config.get(attr, None) if hasattr(model_config, "get") else getattr(model_config, attr, None)
        if value:
            return str(value)
    raise ValueError("the rollout's model config names no path")


def sample_next(logits: torch.Tensor, *, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator) -> tuple[int, float]:
    """One token from ``logits`` (shape [vocab]) and its log-probability under the
    temperature-scaled distribution; top-k then top-p restrict where it is drawn from."""
    if temperature <= 0:  # greedy, as vLLM treats temperature 0
        scaled = torch.log_softmax(logits.float(), dim=-1)
        token = int(torch.argmax(scaled))
        return token, float(scaled[token])
    scaled = torch.log_softmax(logits.float() / temperature, dim=-1)
    masked = scaled.clone()
    if top_k and 0 < top_k < masked.numel():
        kth = torch.topk(masked, top_k).values[-1]
        masked[masked < kth] = float("-inf")
    if 0 < top_p < 1:
        probs, order = torch.sort(torch.softmax(masked, dim=-1), descending=True)
        outside = torch.cumsum(probs, dim=-1) - probs > top_p  # keep the smallest set reaching top_p
        masked[order[outside]] = float("-inf")
    token = int(torch.multinomial(torch.softmax(masked, dim=-1), 1, generator=generator))
    return token, float(scaled[token])


class TransformersRolloutServer:
    """Token-in, token-out generation with a transformers model (a Ray actor, async)."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int = 0) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig
        from verl.utils.config import omega_conf_to_dataclass

        self.config = omega_conf_to_dataclass(config)
        path = _local_path(model_config)
        torch.set_num_threads(max(1, int(os.environ.get("EDGEPLANE_ROLLOUT_THREADS", "1"))))
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        eos: Any = None
        try:
            eos = GenerationConfig.from_pretrained(path).eos_token_id
        except OSError:
            eos = None
        eos = eos if eos is not None else self.model.config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.max_model_len = int(self.config.max_model_len or self.config.prompt_length + self.config.response_length)
        seed = int(getattr(self.config, "seed", 0) or 0) + replica_rank
        self.generator = torch.Generator().manual_seed(seed)
        self.global_steps: int | None = None
        self.lock = asyncio.Lock()
        self.weight_updates = 0
        self.last_update_norm = 0.0

    async def get_server_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), 0

    # -- generation ---------------------------------------------------------------------------
    async def generate(self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str,
                       image_data: Any = None, video_data: Any = None, **kwargs: Any) -> TokenOutput:
        if image_data is not None or video_data is not None:
            raise ValueError("the transformers rollout is text-only")
        params = dict(sampling_params)
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            raise ValueError(f"prompt length {len(prompt_ids)} leaves no room within {self.max_model_len} tokens")
        max_tokens = params.pop("max_tokens", params.pop("max_new_tokens", None))
        if max_tokens is None:
            max_tokens = min(self.config.response_length,
                             self.config.prompt_length + self.config.response_length - len(prompt_ids))
        max_tokens = max(1, min(int(max_tokens), room))
        async with self.lock:  # one sequence at a time: the model is small, the cores are few
            tokens, log_probs = await asyncio.to_thread(self._sample, list(prompt_ids), max_tokens, params)
        return TokenOutput(token_ids=tokens, log_probs=log_probs if params.get("logprobs") else None,
                           stop_reason="completed", extra_fields={"global_steps": self.global_steps})

    @torch.no_grad()
    def _sample(self, prompt_ids: list[int], max_tokens: int, params: dict[str, Any]) -> tuple[list[int], list[float]]:
        temperature = float(params.get("temperature", 1.0) if params.get("temperature") is not None else 1.0)
        top_k = int(params.get("top_k", -1) or -1)
        top_p = float(params.get("top_p", 1.0) if params.get("top_p") is not None else 1.0)
        ignore_eos = bool(params.get("ignore_eos", False))
        out = self.model(input_ids=torch.tensor([prompt_ids]), use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
        tokens: list[int] = []
        log_probs: list[float] = []
        for _ in range(max_tokens):
            token, log_prob = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                          generator=self.generator)
            tokens.append(token)
            log_probs.append(log_prob)
            if token in self.eos_ids and not ignore_eos:
                break
            out = self.model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[0, -1]
        return tokens, log_probs

    # -- weights ------------------------------------------------------------------------------
    async def load_weights(self, state: dict[str, torch.Tensor]) -> int:
        """The actor's full state dict (Hugging Face names); returns the tensors loaded."""
        async with self.lock:  # never mid-sequence
            before = {k: v.detach().clone() for k, v in self.model.state_dict().items() if k in state}
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {k for k in missing if k == "lm_head.weight" and self.model.config.tie_word_embeddings}
            if unexpected or set(missing) - tied:
                raise ValueError(f"actor and rollout disagree on the weights: missing {sorted(set(missing) - tied)}, "
                                 f"unexpected {sorted(unexpected)}")
            self.weight_updates += 1
            after = self.model.state_dict()
            delta = float(torch.sqrt(sum(((after[k] - before[k]).double() ** 2).sum() for k in before)))
            self.last_update_norm = delta
        # The size of the update the actor made since the last sync: what the rollout now samples from.
        logger.warning("%s %d: %d tensors, |delta weights| = %.6e", WEIGHT_SYNC_LOG, self.weight_updates,
                       len(state), delta)
        return len(state)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    # -- what verl's managers call on a vLLM server: nothing to free on the CPU -----------------
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None  # a KV cache lives for one request only

    release_kv_cache = resume_kv_cache = clear_kv_cache

    async def wait_for_requests_to_drain(self) -> None:
        async with self.lock:
            return

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict[str, Any]:
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def stats(self) -> dict[str, Any]:
        return {"weight_updates": self.weight_updates, "global_steps": self.global_steps,
                "last_update_norm": self.last_update_norm}


class TransformersReplica(RolloutReplica):
    """One ``TransformersRolloutServer`` per replica, beside the hybrid actor workers."""

    async def launch_servers(self) -> None:
        name = server_name(self.replica_rank, self.name_suffix)
        server = ray.remote(TransformersRolloutServer).options(
            name=name, num_cpus=0, max_concurrency=self.max_concurrency,
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        address, port = await server.get_server_address.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"{address}:{port}-{name}"  # a key for verl's router; nothing listens on it

    async def sleep(self) -> None:
        await asyncio.gather(*[server.sleep.remote() for server in self.servers])


class TransformersServerAdapter(BaseRollout):
    """The rollout as the actor worker sees it: weights go to this replica's server."""

    def __init__(self, config: Any, model_config: Any, device_mesh: Any, replica_rank: int = -1) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        size = (self.config.tensor_model_parallel_size * self.config.data_parallel_size
                * self.config.pipeline_model_parallel_size)
        self.replica_rank = rank // size if replica_rank == -1 else replica_rank
        self.is_leader = rank % size == 0
        self.server_handle: Any = None

    def _server(self) -> Any:
        if self.server_handle is None:
            self.server_handle = ray.get_actor(server_name(self.replica_rank))
        return self.server_handle

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(self, weights: Any, wire_format: str = "named_tensors", global_steps: int | None = None,
                             **kwargs: Any) -> None:
        from verl.workers.rollout.utils import ensure_async_iterator

        if wire_format != "named_tensors":
            raise ValueError(f"the transformers rollout takes full tensors, not {wire_format!r}")
        state: dict[str, torch.Tensor] = {}
        async for name, tensor in ensure_async_iterator(weights):  # every rank iterates: FSDP gathers collectively
            full = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
            state[name] = full.detach().to("cpu", copy=True)
        if self.is_leader:
            server = self._server()
            await server.load_weights.remote(state)
            if global_steps is not None:
                await server.set_global_steps.remote(global_steps)
