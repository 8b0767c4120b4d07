"""The policy: a causal LM and its tokenizer behind one small interface.

Either the built-in tiny GPT (transformers' GPT-2 architecture, random init, trained
here from scratch with a character tokenizer) or any local Hugging Face checkpoint
directory (model + tokenizer, chat template if present). Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

Prompt = str | list[dict[str, str]]


class CharTokenizer:
    """One id per character; 0 pad, 1 beginning of text, 2 end of text."""

    PAD, BOS, EOS = 0, 1, 2
    SPECIALS = 3

    def __init__(self, charset: str) -> None:
        self.charset = "".join(sorted(set(charset)))
        self._ids = {c: i + self.SPECIALS for i, c in enumerate(self.charset)}

    @property
    def vocab_size(self) -> int:
        return len(self.charset) + self.SPECIALS

    def encode(self, text: str) -> list[int]:
        unknown = sorted({c for c in text if c not in self._ids})
        if unknown:
            raise ValueError(f"characters {''.join(unknown)!r} are not in the tiny model's charset {self.charset!r}")
        return [self._ids[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        out = []
        for i in ids:
            if i == self.EOS:
                break
            if i >= self.SPECIALS:
                out.append(self.charset[i - self.SPECIALS])
        return "".join(out)


@dataclass
class Policy:
    model: torch.nn.Module
    tokenizer: Any  # CharTokenizer or a Hugging Face tokenizer
    eos_id: int
    pad_id: int
    kind: str  # "tiny" or "hf"

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        if self.kind == "tiny":
            if not isinstance(prompt, str):
                prompt = "\n".join(m["content"] for m in prompt)
            return [CharTokenizer.BOS, *self.tokenizer.encode(prompt)]
        if isinstance(prompt, list):
            if getattr(self.tokenizer, "chat_template", None):
                ids = self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
                # transformers 5 answers a BatchEncoding (a mapping); older releases a list.
                return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            prompt = "\n".join(m["content"] for m in prompt)
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_answer(self, text: str) -> list[int]:
        """Answer tokens followed by end-of-text: the supervised warm-up's target."""
        if self.kind == "tiny":
            return [*self.tokenizer.encode(text), self.eos_id]
        return [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos_id]

    def decode_response(self, ids: list[int]) -> str:
        if self.kind == "tiny":
            return self.tokenizer.decode(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def tiny_policy(charset: str, *, layers: int, dim: int, heads: int, max_positions: int, seed: int) -> Policy:
    tokenizer = CharTokenizer(charset)
    config = GPT2Config(
        vocab_size=tokenizer.vocab_size,
        n_positions=max_positions,
        n_embd=dim,
        n_layer=layers,
        n_head=heads,
        bos_token_id=CharTokenizer.BOS,
        eos_token_id=CharTokenizer.EOS,
        pad_token_id=CharTokenizer.PAD,
        # GPT-2's tanh-approximated GELU as one fused op: ~20% faster forward + backward
        # on CPU than the default "gelu_new", which runs as many small ops.
        activation_function="gelu_pytorch_tanh",
        # No dropout: RL needs the sampling and the loss to see the same distribution.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return Policy(model, tokenizer, CharTokenizer.EOS, CharTokenizer.PAD, "tiny")


def hf_policy(path: str | Path) -> Policy:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"{path} is not a Hugging Face checkpoint directory (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.config.eos_token_id
    if eos is None:
        raise ValueError(f"{path}: neither the tokenizer nor the model config names an end-of-text token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return Policy(model, tokenizer, int(eos), int(pad), "hf")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda, but no GPU is visible to this worker: use device auto or cpu")
    return torch.device(name)
