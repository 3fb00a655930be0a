"""A matrix stored as per-subspace codebooks plus soft weights (ACCEPT's SCPP and SCAP building block)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .budget import num_subspaces
from .errors import AdapterConfigError


class CodebookMatrix(nn.Module):
    """Dense (n, d) matrix composed from weights (n, K, C) and codebooks (K, C, s), with d = K * s.

    Row i, subspace k (columns ``[k*s, (k+1)*s)``) is ``sum_c weight[i, k, c] * codebook[k, c, :]``:
    no softmax, no normalisation. Both tensors are float32 and initialised with
    ``kaiming_uniform_`` (a = sqrt(5) for the weights, ``codebook_init_a`` for the codebooks:
    sqrt(5) for SCPP, 0 for SCAP; docs/fidelity.md#f-init).
    """

    def __init__(
        self,
        num_rows: int,
        dim: int,
        sub_dim: int,
        codebook_size: int,
        codebook_init_a: float = math.sqrt(5),
        flag: str = "sub_dim",
    ) -> None:
        super().__init__()
        if num_rows < 1:
            raise ValueError(f"a codebook matrix needs >= 1 rows, got {num_rows}.")
        if codebook_size < 1:
            field = f"codebook_size_{flag.removeprefix('sub_dim_')}"
            raise AdapterConfigError(f"{field} must be >= 1, got {codebook_size}.", field)
        k = num_subspaces(dim, sub_dim, flag)
        self.num_rows, self.dim, self.sub_dim, self.codebook_size = num_rows, dim, sub_dim, codebook_size
        self.codebook_init_a = codebook_init_a
        self.weight = nn.Parameter(torch.empty(num_rows, k, codebook_size, dtype=torch.float32))
        self.codebook = nn.Parameter(torch.empty(k, codebook_size, sub_dim, dtype=torch.float32))
        self.reset_parameters()

    @property
    def num_subspaces(self) -> int:
        return self.codebook.shape[0]

    def reset_parameters(self) -> None:
        """Kaiming-uniform init; PyTorch's fan_in of a 3-D tensor (a, b, c) is b*c."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.codebook, a=self.codebook_init_a)

    def forward(self) -> torch.Tensor:
        """Materialise the dense matrix, shape (n, K*s) = (n, d)."""
        return compose(self.weight, self.codebook)


def compose(weight: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """einsum("nkc,kcs->nks") reshaped row-major to (n, K*s)."""
    n, k, _ = weight.shape
    return torch.einsum("nkc,kcs->nks", weight, codebook).reshape(n, k * codebook.shape[-1])
