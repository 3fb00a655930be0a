"""The trainable adapter: a prepended prompt and an optional added update, one encoder class per kind.

Prompts (m, d): dense (PT), codebook (ACCEPT's SCPP), lowrank (DPT), random_projection (ULPT). Updates:
position-wise (L, d) rows, lowrank (DePT A @ B) or codebook (SCAP), or tokenwise (ADePT: a function of
each input embedding). Model code reaches the update only through ``PromptAdapter.add_update``.
Tensor key names follow the original ``adapter_model.bin`` files (docs/fidelity.md#f-adapter-keys), so one
mapping serves saving, loading the original checkpoints and transfer initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .budget import POSITION_WISE_UPDATES
from .codebook import CodebookMatrix
from .config import PromptTuningConfig

KEY_PROMPT = "prompt_embeddings"
KEY_PROMPT_WEIGHT = "prompt_weight"
KEY_PROMPT_CODEBOOK = "codebook_prompt"
KEY_LORA_A = "prompt_encoder.lora_embedding_A"
KEY_LORA_B = "prompt_encoder.lora_embedding_B"
KEY_SCAP_WEIGHT = "prompt_encoder.lora_weight"
KEY_SCAP_CODEBOOK = "prompt_encoder.codebook_lora"
# DPT's W and ULPT's s, b (the original's names); ULPT's frozen projection W (ours: the original regenerates it).
KEY_DPT_PROJECTION = "prompt_encoder.base_embedding.weight"
KEY_ULPT_SCALE = "prompt_encoder.base_embedding.scale"
KEY_ULPT_BIAS = "prompt_encoder.base_embedding.bias"
KEY_ULPT_PROJECTION = "prompt_encoder.base_embedding.random_proj"
# ADePT's biases (its A and B share DePT's key names, with shapes d x r and r x d).
KEY_TOKENWISE_A_BIAS = "prompt_encoder.lora_embedding_a"
KEY_TOKENWISE_B_BIAS = "prompt_encoder.lora_embedding_b"
TOKENWISE_DROPOUT = 0.1
"""ADePT's dropout on e A + a while training."""
ADAPTER_KEYS = (
    KEY_PROMPT, KEY_PROMPT_WEIGHT, KEY_PROMPT_CODEBOOK, KEY_LORA_A, KEY_LORA_B, KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK,
    KEY_DPT_PROJECTION, KEY_ULPT_SCALE, KEY_ULPT_BIAS, KEY_ULPT_PROJECTION, KEY_TOKENWISE_A_BIAS,
    KEY_TOKENWISE_B_BIAS,
)  # fmt: skip
# The tensors ACCEPT's transfer initialisation (--pretrain_init) copies for each side.
SCPP_TRANSFER_KEYS = (KEY_PROMPT_WEIGHT, KEY_PROMPT_CODEBOOK)
SCAP_TRANSFER_KEYS = (KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK)


class DensePrompt(nn.Module):
    """Plain prompt P (m, d), float32; RANDOM init N(0, 1) like ``nn.Embedding``."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(num_tokens, dim, dtype=torch.float32))
        nn.init.normal_(self.embedding, 0.0, 1.0)

    def init_from_token_ids(self, word_embeddings: torch.Tensor, token_ids: Sequence[int]) -> None:
        """TEXT init: repeat the id list to m rows (truncating), copy E[ids] as float32."""
        m = self.embedding.shape[0]
        ids = list(token_ids)
        if not ids:
            raise ValueError("prompt_tuning_init_text tokenised to zero ids.")
        ids = (ids * math.ceil(m / len(ids)))[:m]
        index = torch.tensor(ids, dtype=torch.long, device=word_embeddings.device)
        with torch.no_grad():
            self.embedding.copy_(word_embeddings[index].detach().float())

    def forward(self) -> torch.Tensor:
        return self.embedding

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_PROMPT: self.embedding}


class CodebookPrompt(CodebookMatrix):
    """SCPP: the prompt composed from weights (m, K_p, C_p) and codebooks (K_p, C_p, s_p)."""

    def __init__(self, num_tokens: int, dim: int, sub_dim: int, codebook_size: int) -> None:
        super().__init__(num_tokens, dim, sub_dim, codebook_size, math.sqrt(5), "sub_dim_scpp")

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_PROMPT_WEIGHT: self.weight, KEY_PROMPT_CODEBOOK: self.codebook}


class LowRankUpdate(nn.Module):
    """DePT: scaling * (A @ B), A (L, r) kaiming-uniform(a=sqrt 5), B (r, d) zeros, scaling = alpha/sqrt(r)."""

    def __init__(self, max_length: int, dim: int, r: int, scaling: float) -> None:
        super().__init__()
        self.scaling = scaling
        self.lora_A = nn.Parameter(torch.empty(max_length, r, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(r, dim, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        """The (L, d) update."""
        return self.scaling * (self.lora_A @ self.lora_B)

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_LORA_A: self.lora_A, KEY_LORA_B: self.lora_B}


class CodebookUpdate(CodebookMatrix):
    """SCAP: (L, d) update from weights (L, K_a, C_a) and codebooks (K_a, C_a, s_a), unscaled: docs/fidelity.md#f-scap."""

    def __init__(self, max_length: int, dim: int, sub_dim: int, codebook_size: int) -> None:
        super().__init__(max_length, dim, sub_dim, codebook_size, 0.0, "sub_dim_scap")

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_SCAP_WEIGHT: self.weight, KEY_SCAP_CODEBOOK: self.codebook}


class LowRankPrompt(nn.Module):
    """DPT: P = Z W, Z (m, r_p) N(0, 1) like ``nn.Embedding``, W stored (d, r_p) like a bias-free
    ``nn.Linear(r_p, d)`` weight (Kaiming-uniform, a = sqrt 5); both trained."""

    def __init__(self, num_tokens: int, dim: int, rank: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(num_tokens, rank, dtype=torch.float32))
        self.projection = nn.Parameter(torch.empty(dim, rank, dtype=torch.float32))
        nn.init.normal_(self.embedding, 0.0, 1.0)
        nn.init.kaiming_uniform_(self.projection, a=math.sqrt(5))

    def forward(self) -> torch.Tensor:
        """The (m, d) prompt."""
        return self.embedding @ self.projection.T

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_PROMPT: self.embedding, KEY_DPT_PROJECTION: self.projection}


def random_projection_bound(rank: int, dim: int) -> float:
    """ULPT's uniform range for its frozen projection: W ~ U(-sqrt(6 / (r_p + d)), sqrt(6 / (r_p + d)))."""
    return math.sqrt(6.0 / (rank + dim))


class RandomProjectionPrompt(nn.Module):
    """ULPT: P[i] = s * (Z[i] W[i // (m / G)]) + b.

    Z (m, r_p) N(0, 1) and the d-vectors s (init 1), b (init 0) are trained; W (G, r_p, d) is a frozen
    random projection per group of m / G rows, drawn from the global RNG at construction and saved with
    the adapter (a buffer, not a parameter).
    """

    def __init__(self, num_tokens: int, dim: int, rank: int, groups: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(num_tokens, rank, dtype=torch.float32))
        self.scale = nn.Parameter(torch.ones(dim, dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(dim, dtype=torch.float32))
        nn.init.normal_(self.embedding, 0.0, 1.0)
        bound = random_projection_bound(rank, dim)
        self.register_buffer("projection", torch.empty(groups, rank, dim).uniform_(-bound, bound))

    def forward(self) -> torch.Tensor:
        """The (m, d) prompt."""
        groups, rank, dim = self.projection.shape
        grouped = self.embedding.view(groups, -1, rank)  # (G, m / G, r_p)
        projected = torch.bmm(grouped, self.projection.to(self.embedding.dtype)).reshape(-1, dim)
        return self.scale * projected + self.bias

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {KEY_PROMPT: self.embedding, KEY_ULPT_SCALE: self.scale, KEY_ULPT_BIAS: self.bias}

    def named_frozen_tensors(self) -> dict[str, torch.Tensor]:
        return {KEY_ULPT_PROJECTION: self.projection}


class TokenwiseUpdate(nn.Module):
    """ADePT: Delta(e) = ReLU(e A + a) B + b for each input embedding e (d), position-independent, unscaled.

    A (d, r) Kaiming-uniform (a = sqrt 5); a (r), B (r, d), b (d) zeros, so Delta = 0 at init; dropout
    ``TOKENWISE_DROPOUT`` on e A + a while training.
    """

    def __init__(self, dim: int, r: int) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(dim, r, dtype=torch.float32))
        self.lora_a = nn.Parameter(torch.zeros(r, dtype=torch.float32))
        self.lora_B = nn.Parameter(torch.zeros(r, dim, dtype=torch.float32))
        self.lora_b = nn.Parameter(torch.zeros(dim, dtype=torch.float32))
        self.dropout = nn.Dropout(TOKENWISE_DROPOUT)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, n, d) embeddings -> the (B, n, d) update, in the adapter's dtype."""
        hidden = torch.relu(self.dropout(embeds.to(self.lora_A.dtype) @ self.lora_A + self.lora_a))
        return hidden @ self.lora_B + self.lora_b

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        return {
            KEY_LORA_A: self.lora_A, KEY_TOKENWISE_A_BIAS: self.lora_a,
            KEY_LORA_B: self.lora_B, KEY_TOKENWISE_B_BIAS: self.lora_b,
        }  # fmt: skip


def build_prompt(config: PromptTuningConfig, dim: int) -> nn.Module:
    """The prepended-prompt encoder of ``config.kinds[0]``."""
    kind, m = config.kinds[0], config.num_virtual_tokens
    if kind == "codebook":
        return CodebookPrompt(m, dim, config.sub_dim_scpp, config.codebook_size_scpp)
    if kind == "lowrank":
        return LowRankPrompt(m, dim, config.lodim_r)
    if kind == "random_projection":
        return RandomProjectionPrompt(m, dim, config.lodim_r, config.num_random_proj)
    return DensePrompt(m, dim)


def build_update(config: PromptTuningConfig, dim: int) -> nn.Module | None:
    """The added-update encoder of ``config.kinds[1]`` (None for 'none')."""
    kind = config.kinds[1]
    if kind == "codebook":
        return CodebookUpdate(config.max_length, dim, config.sub_dim_scap, config.codebook_size_scap)
    if kind == "lowrank":
        return LowRankUpdate(config.max_length, dim, config.r, config.scaling)
    if kind == "tokenwise":
        return TokenwiseUpdate(dim, config.r)
    return None


class PromptAdapter(nn.Module):
    """Prepended side (``prompt``) and optional added side (``added``) built from a config and width d."""

    def __init__(self, config: PromptTuningConfig, dim: int) -> None:
        super().__init__()
        self.prompt: nn.Module = build_prompt(config, dim)
        self.added: nn.Module | None = build_update(config, dim)
        self.position_wise = config.kinds[1] in POSITION_WISE_UPDATES
        self.num_virtual_tokens = config.num_virtual_tokens
        self.max_length = config.max_length if self.position_wise else None
        self._cache: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _materialized(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()) and self.training:
            raise RuntimeError("materialized() is for inference: gradients cannot reach the adapter through it.")
        return self._cache

    def compose(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt (m, d), position-wise update (L, d) or None), float32; the materialised copy when one is
        active. A tokenwise update has no fixed rows: None."""
        return self.composed_prompt(), self._composed_update()

    def composed_prompt(self) -> torch.Tensor:
        """The (m, d) prompt, float32; the materialised copy when one is active."""
        return self._materialized()[0] if self._cache is not None else self.prompt()

    def _composed_update(self) -> torch.Tensor | None:
        """The (L, d) position-wise update (None without one, or for a tokenwise update)."""
        if self._cache is not None:
            return self._materialized()[1]
        return self.added() if self.position_wise else None

    def add_update(self, inputs_embeds: torch.Tensor, from_end: bool) -> torch.Tensor:
        """(B, n, d) input embeddings plus the update, in their dtype (unchanged without one).

        A position-wise update adds its rows [:n], or [L - n:] when ``from_end`` (left-padded inputs end
        at row L - 1); a tokenwise update adds its network's output for each embedding.
        """
        if self.added is None:
            return inputs_embeds
        if not self.position_wise:
            return inputs_embeds + self.added(inputs_embeds).to(inputs_embeds.dtype)
        update = self._composed_update()
        n = inputs_embeds.shape[1]
        rows = update[update.shape[0] - n :] if from_end else update[:n]
        return inputs_embeds + rows.to(inputs_embeds.dtype)

    def set_materialized(self, on: bool) -> None:
        """Compose once (no grad) and reuse it, or drop the cached copy (a tokenwise update still runs per
        call: it depends on the input)."""
        if on:
            with torch.no_grad():
                self._cache = (self.prompt(), self.added() if self.position_wise else None)
        else:
            self._cache = None

    def prepended_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.parameters())

    def added_parameters(self) -> list[nn.Parameter]:
        return list(self.added.parameters()) if self.added is not None else []

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        """Original key name -> parameter, for every trained adapter tensor."""
        out = dict(self.prompt.named_adapter_tensors())
        if self.added is not None:
            out.update(self.added.named_adapter_tensors())
        return out

    def named_frozen_tensors(self) -> dict[str, torch.Tensor]:
        """Key -> frozen tensor saved with the adapter (ULPT's random projection; else none)."""
        frozen = getattr(self.prompt, "named_frozen_tensors", None)
        return frozen() if frozen is not None else {}

    def named_saved_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor of the adapter file: the trained ones and the frozen ones."""
        return {**self.named_adapter_tensors(), **self.named_frozen_tensors()}
