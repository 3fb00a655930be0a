"""The trainable adapter: a prepended prompt (dense or SCPP) and an optional added update (DePT A@B or SCAP).

Tensor key names follow the original ``adapter_model.bin`` files (docs/fidelity.md#f-adapter-keys), so one
mapping serves saving, loading the original checkpoints and transfer initialisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .codebook import CodebookMatrix
from .config import PromptTuningConfig

KEY_PROMPT = "prompt_embeddings"
KEY_PROMPT_WEIGHT = "prompt_weight"
KEY_PROMPT_CODEBOOK = "codebook_prompt"
KEY_LORA_A = "prompt_encoder.lora_embedding_A"
KEY_LORA_B = "prompt_encoder.lora_embedding_B"
KEY_SCAP_WEIGHT = "prompt_encoder.lora_weight"
KEY_SCAP_CODEBOOK = "prompt_encoder.codebook_lora"
ADAPTER_KEYS = (
    KEY_PROMPT, KEY_PROMPT_WEIGHT, KEY_PROMPT_CODEBOOK, KEY_LORA_A, KEY_LORA_B, KEY_SCAP_WEIGHT, KEY_SCAP_CODEBOOK,
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


class PromptAdapter(nn.Module):
    """Prepended side (``prompt``) and optional added side (``added``) built from a config and width d."""

    def __init__(self, config: PromptTuningConfig, dim: int) -> None:
        super().__init__()
        m = config.num_virtual_tokens
        if config.scpp:
            self.prompt: nn.Module = CodebookPrompt(m, dim, config.sub_dim_scpp, config.codebook_size_scpp)
        else:
            self.prompt = DensePrompt(m, dim)
        self.added: nn.Module | None = None
        if config.has_added:
            if config.scap:
                self.added = CodebookUpdate(
                    config.max_length, dim, config.sub_dim_scap, config.codebook_size_scap
                )
            else:
                self.added = LowRankUpdate(config.max_length, dim, config.r, config.scaling)
        self.num_virtual_tokens = m
        self.max_length = config.max_length if self.added is not None else None
        self._cache: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def compose(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(prompt (m, d), added (L, d) or None), float32; the materialised copy when one is active."""
        return self.composed_prompt(), self._composed_update()

    def composed_prompt(self) -> torch.Tensor:
        """The (m, d) prompt, float32; the materialised copy when one is active."""
        return self._materialized()[0] if self._cache is not None else self.prompt()

    def _composed_update(self) -> torch.Tensor | None:
        if self._cache is not None:
            return self._materialized()[1]
        return self.added() if self.added is not None else None

    def _materialized(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()) and self.training:
            raise RuntimeError(
                "materialized() is for inference: gradients cannot reach the adapter through it."
            )
        return self._cache

    def add_update(self, inputs_embeds: torch.Tensor, from_end: bool) -> torch.Tensor:
        """The (B, n, d) input embeddings plus the added update (unchanged without one).

        A position-wise update adds its rows [:n], or its last n rows [L - n:] when ``from_end`` (a
        left-padded decoder-only batch ends where the update ends). The update is composed once per call.
        """
        added = self._composed_update()
        if added is None:
            return inputs_embeds
        n = inputs_embeds.shape[1]
        rows = added[added.shape[0] - n :] if from_end else added[:n]
        return inputs_embeds + rows.to(inputs_embeds.dtype)

    def set_materialized(self, on: bool) -> None:
        """Compose once (no grad) and reuse it, or drop the cached copy."""
        if on:
            with torch.no_grad():
                prompt, added = self.prompt(), (self.added() if self.added is not None else None)
            self._cache = (prompt, added)
        else:
            self._cache = None

    def prepended_parameters(self) -> list[nn.Parameter]:
        return list(self.prompt.parameters())

    def added_parameters(self) -> list[nn.Parameter]:
        return list(self.added.parameters()) if self.added is not None else []

    def named_adapter_tensors(self) -> dict[str, nn.Parameter]:
        """Original key name -> parameter, for every adapter tensor."""
        out = dict(self.prompt.named_adapter_tensors())
        if self.added is not None:
            out.update(self.added.named_adapter_tensors())
        return out
