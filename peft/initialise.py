"""Initialising a fresh adapter: the prompt from the embeddings of a text (TEXT init) and ACCEPT's
transfer of codebooks and weights from another run (``pretrain_scpp_ckpt`` / ``pretrain_scap_ckpt``)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from . import io
from .config import PromptTuningConfig
from .encoders import DensePrompt, PromptAdapter
from .errors import AdapterConfigError

logger = logging.getLogger(__name__)


def initialise_adapter(
    adapter: PromptAdapter, config: PromptTuningConfig, word_embeddings: torch.Tensor, tokenizer: Any = None
) -> None:
    """TEXT init of a dense prompt from the (V, d) ``word_embeddings`` and the transfer files of ``config``.

    Without ``tokenizer`` the one of ``tokenizer_name_or_path`` (else ``base_model_name_or_path``) is loaded.
    """
    if config.prompt_tuning_init == "TEXT" and isinstance(adapter.prompt, DensePrompt):
        if tokenizer is None:
            from transformers import AutoTokenizer

            source = config.tokenizer_name_or_path or config.base_model_name_or_path
            if source is None:
                raise AdapterConfigError(
                    "prompt_tuning_init TEXT needs a tokenizer: set tokenizer_name_or_path.",
                    "tokenizer_name_or_path",
                )
            tokenizer = AutoTokenizer.from_pretrained(source)
        ids = tokenizer(config.prompt_tuning_init_text)["input_ids"]
        adapter.prompt.init_from_token_ids(word_embeddings, ids)
    for path, on, side in (
        (config.pretrain_scpp_ckpt, config.scpp, "scpp"),
        (config.pretrain_scap_ckpt, config.scap, "scap"),
    ):
        if path and not on:
            logger.warning("pretrain_%s_ckpt is ignored: %s is off.", side, side)
    io.load_transfer_init(
        adapter.named_adapter_tensors(),
        config.pretrain_scpp_ckpt if config.scpp else None,
        config.pretrain_scap_ckpt if config.scap else None,
    )
