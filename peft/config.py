"""Adapter configuration for the DePT family, serialised as ``adapter_config.json``.

One dataclass covers every method: an adapter is a prompt kind (what is prepended) and an update kind
(what is added to the input embeddings), ``kinds``. The published methods are presets of the original
flags (``METHOD_PRESETS``); ``--prompt_kind``/``--update_kind`` pick any other pair. ``method_name`` says
which method a config selects. Reads our own file and the original DePT/ACCEPT/ULPT/ADePT files (their
extra fields are kept in ``extra_fields``).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .budget import (
    POSITION_WISE_UPDATES,
    PROMPT_KINDS,
    PT_BUDGET_TOKENS,
    UPDATE_KINDS,
    count_adapter_params,
    num_subspaces,
)
from .errors import AdapterConfigError
from .family import TASK_TYPES

logger = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
PEFT_TYPES = (
    "PROMPT_TUNING", "PROMPT_TUNING_LORA", "PROMPT_TUNING_DPT", "PROMPT_TUNING_LODIM", "PROMPT_TUNING_LORAX",
)  # fmt: skip
"""The original flags' --peft_type values: PT, DePT/ACCEPT, DPT and ULPT (ULPT's code), ADePT."""
# Published methods as (prompt kind, update kind); PROMPT_TUNING_LORA's pair follows --scpp/--scap/--r.
FIXED_PRESETS = {
    "PROMPT_TUNING": ("dense", "none"),
    "PROMPT_TUNING_DPT": ("lowrank", "none"),
    "PROMPT_TUNING_LODIM": ("random_projection", "none"),
    "PROMPT_TUNING_LORAX": ("dense", "tokenwise"),
}
PRESET_NAMES = {
    ("dense", "none"): "PT",
    ("dense", "lowrank"): "DePT",
    ("codebook", "lowrank"): "ACCEPT-SCPP",
    ("dense", "codebook"): "ACCEPT-SCAP",
    ("codebook", "codebook"): "ACCEPT",
    ("lowrank", "none"): "DPT",
    ("random_projection", "none"): "ULPT",
    ("dense", "tokenwise"): "ADePT",
}
"""The published methods' names by (prompt kind, update kind); any other pair is named after its parts
(``PROMPT_LABELS``/``UPDATE_LABELS``)."""
METHOD_NAMES = ("PT", "DPT", "ULPT", "DePT", "ADePT", "ACCEPT-SCPP", "ACCEPT-SCAP", "ACCEPT")
"""Every published ``method_name``, in the order of the results tables (prompt-only, decomposed, ACCEPT; the one
list of them)."""
PROMPT_LABELS = {"dense": "dense", "codebook": "SCPP", "lowrank": "DPT", "random_projection": "ULPT"}
UPDATE_LABELS = {"none": "no", "lowrank": "DePT", "codebook": "SCAP", "tokenwise": "ADePT"}
INIT_TYPES = ("RANDOM", "TEXT")
DEFAULT_INIT_TEXT = "Classify this text is postive or not:"
# Fields that shrink an adapter over the paper's budget (named by the budget error).
BUDGET_FIELDS = (
    "sub_dim_scpp", "codebook_size_scpp", "sub_dim_scap", "codebook_size_scap", "r", "lodim_r", "enforce_budget",
)  # fmt: skip
# Fields that decide the adapter tensors' shapes (a resumed checkpoint must agree on all of them).
SHAPE_FIELDS = (
    "peft_type", "num_virtual_tokens", "token_dim", "max_length", "r", "scpp", "sub_dim_scpp",
    "codebook_size_scpp", "scap", "sub_dim_scap", "codebook_size_scap", "lodim_r", "num_random_proj",
    "prompt_kind", "update_kind",
)  # fmt: skip


def default_prompt_init(prompt_kind: str, update_kind: str) -> str:
    """The prompt init each method uses unless told otherwise: TEXT for a dense prompt (DePT's default, every
    released DePT run; ADePT keeps it), RANDOM for the ACCEPT variants (ACCEPT's default) and for every
    prompt that is not a plain m x d matrix (TEXT cannot initialise codebooks or DPT/ULPT factors)."""
    return "TEXT" if prompt_kind == "dense" and update_kind != "codebook" else "RANDOM"


# Fields of the original configs that only steer the original loader or are unused there.
_ORIGINAL_ONLY = (
    "bias",
    "hidden_size",
    "inference_mode",
    "init_lora_weights",
    "load_base_embeddings",
    "load_lora_embedding_B",
    "load_lora_embeddings",
    "num_attention_heads",
    "num_layers",
    "output_dir",
    "pretrain_init",
    "revision",
    "save_base_embeddings",
    "save_lora_embeddings",
)
# The original DPT/ULPT configs keep the prompt rank (their --lodim_r) in ``r``.
_RANK_IN_R = ("PROMPT_TUNING_DPT", "PROMPT_TUNING_LODIM")


class BudgetWarning(UserWarning):
    """The adapter has more trainable parameters than the paper's budget allows."""


@dataclass
class PromptTuningConfig:
    """Hyper-parameters of a prompt adapter (symbols m, d, L, r, s, C as in docs/fidelity.md)."""

    peft_type: str = "PROMPT_TUNING_LORA"
    task_type: str | None = None
    num_virtual_tokens: int = 60
    token_dim: int | None = None
    max_length: int | None = 256
    r: int = 30
    lora_alpha: float = 8
    scpp: bool = False
    sub_dim_scpp: int = 16
    codebook_size_scpp: int = 12
    scap: bool = False
    sub_dim_scap: int = 32
    codebook_size_scap: int = 4
    lodim_r: int = 2
    num_random_proj: int = 1
    prompt_kind: str | None = None
    update_kind: str | None = None
    prompt_tuning_init: str = "RANDOM"
    prompt_tuning_init_text: str | None = DEFAULT_INIT_TEXT
    tokenizer_name_or_path: str | None = None
    base_model_name_or_path: str | None = None
    pretrain_scpp_ckpt: str | None = None
    pretrain_scap_ckpt: str | None = None
    enforce_budget: bool = False
    budget_tokens: int = PT_BUDGET_TOKENS
    num_transformer_submodules: int = 1
    extra_fields: dict[str, Any] = field(default_factory=dict)

    # ---- derived properties -------------------------------------------------------------------
    @property
    def kinds(self) -> tuple[str, str]:
        """(prompt kind, update kind): ``prompt_kind``/``update_kind`` where set, else the peft_type's preset
        (PROMPT_TUNING_LORA: SCPP prompt with --scpp, SCAP update with --scap, else A @ B when r > 0)."""
        if self.peft_type in FIXED_PRESETS:
            prompt, update = FIXED_PRESETS[self.peft_type]
        else:
            prompt = "codebook" if self.scpp else "dense"
            update = "codebook" if self.scap else ("lowrank" if self.r > 0 else "none")
        return self.prompt_kind or prompt, self.update_kind or update

    @property
    def has_added(self) -> bool:
        """True when an added update exists (position-wise or tokenwise)."""
        return self.kinds[1] != "none"

    @property
    def update_needs_length(self) -> bool:
        """True when the update has one row per input position (DePT's A @ B, SCAP): it needs L."""
        return self.kinds[1] in POSITION_WISE_UPDATES

    @property
    def scaling(self) -> float:
        """DePT's low-rank scale lora_alpha / sqrt(r) (0 when r = 0); SCAP and ADePT are unscaled."""
        return self.lora_alpha / self.r**0.5 if self.r > 0 else 0.0

    @property
    def method_name(self) -> str:
        """PT, DePT, ACCEPT-SCPP, ACCEPT-SCAP, ACCEPT, DPT, ULPT, ADePT, or '<prompt> prompt + <update> update'.

        DePT with r = 0 keeps its name (its update is empty, its flags are DePT's).
        """
        prompt, update = self.kinds
        if self.peft_type == "PROMPT_TUNING_LORA" and self.update_kind is None and update == "none":
            update = "lowrank"
        name = PRESET_NAMES.get((prompt, update))
        return name or f"{PROMPT_LABELS[prompt]} prompt + {UPDATE_LABELS[update]} update"

    @property
    def is_prompt_learning(self) -> bool:
        """Queried by transformers' Trainer for PEFT models."""
        return True

    # ---- validation -----------------------------------------------------------------------------
    def validate(self, token_dim: int | None = None, check_init: bool = True) -> None:
        """Raise ``AdapterConfigError`` (a ValueError naming the config fields) for any inconsistent setting.

        ``token_dim`` (d) defaults to ``self.token_dim``; without it the divisibility and budget
        checks are skipped. ``check_init`` also checks the initialisation fields (off when loading
        trained weights). Warns (``BudgetWarning``) when the parameter count exceeds the paper's
        budget, or raises when ``enforce_budget``.
        """
        d = token_dim if token_dim is not None else self.token_dim
        if self.peft_type not in PEFT_TYPES:
            raise AdapterConfigError(
                f"peft_type {self.peft_type!r} is not supported; use one of {PEFT_TYPES}.", "peft_type"
            )
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ValueError(
                f"task_type {self.task_type!r} is not supported; use one of {TASK_TYPES} or None."
            )
        if self.num_virtual_tokens < 1:
            raise AdapterConfigError(
                f"num_virtual_tokens must be >= 1, got {self.num_virtual_tokens}.", "num_virtual_tokens"
            )
        if self.r < 0:
            raise AdapterConfigError(f"r must be >= 0 (0 disables the low-rank update), got {self.r}.", "r")
        if self.num_transformer_submodules != 1:
            raise ValueError(
                "num_transformer_submodules must be 1 (prompts on the encoder only); the original's value 2 "
                "allocates rows it never uses."
            )
        if self.peft_type == "PROMPT_TUNING" and (self.scpp or self.scap):
            raise AdapterConfigError(
                "scpp/scap need peft_type PROMPT_TUNING_LORA (PROMPT_TUNING is vanilla PT).",
                ("scpp", "scap", "peft_type"),
            )
        self._check_kinds()
        if self.update_needs_length and (self.max_length is None or self.max_length < 1):
            raise AdapterConfigError(
                f"max_length must be a fixed length >= 1 for {self.method_name}: the added update has one "
                f"row per input position (got {self.max_length}).",
                "max_length",
            )
        for flag, on, size in (
            ("scpp", self.scpp, self.codebook_size_scpp),
            ("scap", self.scap, self.codebook_size_scap),
        ):
            if on and size < 1:
                raise AdapterConfigError(
                    f"codebook_size_{flag} must be >= 1, got {size}.", f"codebook_size_{flag}"
                )
        if check_init:
            if self.prompt_tuning_init not in INIT_TYPES:
                raise ValueError(
                    f"prompt_tuning_init must be one of {INIT_TYPES}, got {self.prompt_tuning_init!r}."
                )
            if self.prompt_tuning_init == "TEXT" and self.kinds[0] != "dense":
                chosen_by = ("scpp",) if self.scpp else ("peft_type", "prompt_kind")
                raise AdapterConfigError(
                    f"prompt_tuning_init TEXT needs a dense prompt, but {'/'.join(chosen_by)} give a "
                    f"{self.kinds[0]} prompt (composed from smaller factors); use RANDOM init.",
                    ("prompt_tuning_init", *chosen_by),
                )
            if self.prompt_tuning_init == "TEXT" and not self.prompt_tuning_init_text:
                raise AdapterConfigError(
                    "prompt_tuning_init TEXT needs a non-empty prompt_tuning_init_text.",
                    ("prompt_tuning_init", "prompt_tuning_init_text"),
                )
        if d is None:
            return
        if d < 1:
            raise ValueError(f"token_dim must be >= 1, got {d}.")
        defaults = {f.name: f.default for f in fields(self)}
        prompt, update = self.kinds
        if prompt == "codebook":
            num_subspaces(d, self.sub_dim_scpp, "sub_dim_scpp", default=defaults["sub_dim_scpp"])
        if update == "codebook":
            num_subspaces(d, self.sub_dim_scap, "sub_dim_scap", default=defaults["sub_dim_scap"])
        self._check_budget(d)

    def param_count(self, token_dim: int | None = None):
        """Trainable adapter parameters (``budget.ParamCount``, head excluded) for width d."""
        d = token_dim if token_dim is not None else self.token_dim
        if d is None:
            raise ValueError("token_dim is unknown; pass it or build the model with get_peft_model first.")
        prompt, update = self.kinds
        return count_adapter_params(
            dim=d,
            num_virtual_tokens=self.num_virtual_tokens,
            max_length=self.max_length or 0,
            r=self.r,
            sub_dim_scpp=self.sub_dim_scpp,
            codebook_size_scpp=self.codebook_size_scpp,
            sub_dim_scap=self.sub_dim_scap,
            codebook_size_scap=self.codebook_size_scap,
            prompt_kind=prompt,
            update_kind=update,
            lodim_r=self.lodim_r,
        )

    def _check_kinds(self) -> None:
        """The prompt/update kinds exist, agree with scpp/scap, and have the sizes they need."""
        if self.prompt_kind is not None and self.prompt_kind not in PROMPT_KINDS:
            raise AdapterConfigError(
                f"prompt_kind {self.prompt_kind!r} is not supported; use one of {PROMPT_KINDS}.", "prompt_kind"
            )
        if self.update_kind is not None and self.update_kind not in UPDATE_KINDS:
            raise AdapterConfigError(
                f"update_kind {self.update_kind!r} is not supported; use one of {UPDATE_KINDS}.", "update_kind"
            )
        prompt, update = self.kinds
        for switch, on, slot, kind in (("scpp", self.scpp, "prompt_kind", prompt),
                                       ("scap", self.scap, "update_kind", update)):  # fmt: skip
            if on and kind != "codebook":
                raise AdapterConfigError(
                    f"{switch} True asks for a codebook {slot.split('_')[0]}, but peft_type {self.peft_type} / "
                    f"{slot} give {kind!r}; drop {switch} or use {slot} codebook.",
                    (switch, "peft_type", slot),
                )
        if prompt in ("lowrank", "random_projection") and self.lodim_r < 1:
            raise AdapterConfigError(f"lodim_r must be >= 1 for a {prompt} prompt, got {self.lodim_r}.", "lodim_r")
        if prompt == "random_projection":
            groups = self.num_random_proj
            if groups < 1 or self.num_virtual_tokens % groups:
                raise AdapterConfigError(
                    f"num_random_proj {groups} must be >= 1 and divide num_virtual_tokens "
                    f"{self.num_virtual_tokens} (each projection serves m / G prompt rows).",
                    ("num_random_proj", "num_virtual_tokens"),
                )
        if update == "tokenwise" and self.r < 1:
            raise AdapterConfigError(f"r must be >= 1 for the tokenwise (ADePT) update, got {self.r}.", "r")
        if update == "lowrank" and self.update_kind is not None and self.r < 1:
            raise AdapterConfigError(f"r must be >= 1 for update_kind lowrank, got {self.r}.", ("r", "update_kind"))

    def _check_budget(self, d: int) -> None:
        """Paper rule: prepended <= m*d, added <= (budget_tokens - m)*d (docs/fidelity.md#f-budget)."""
        problems = self.budget_problems(d)
        if not problems:
            return
        msg = self.budget_message(problems)
        if self.enforce_budget:
            raise AdapterConfigError(msg + " or set enforce_budget False.", BUDGET_FIELDS)
        warnings.warn(msg + ".", BudgetWarning, stacklevel=3)

    def budget_problems(self, d: int) -> dict[str, str]:
        """Each part over the paper's budget ("prepended", "added", "total") -> "<count> > <limit> (<rule>)"."""
        count = self.param_count(d)
        limit_pre = self.num_virtual_tokens * d
        limit_add = max(self.budget_tokens - self.num_virtual_tokens, 0) * d
        problems = {}
        if count.prepended > limit_pre:
            problems["prepended"] = f"prepended side {count.prepended:,} > {limit_pre:,} (m*d)"
        if count.added > limit_add:
            problems["added"] = f"added side {count.added:,} > {limit_add:,} ((budget_tokens - m)*d)"
        if count.total > self.budget_tokens * d:
            problems["total"] = f"total {count.total:,} > {self.budget_tokens * d:,} (budget_tokens*d)"
        return problems

    def budget_message(self, problems: dict[str, str]) -> str:
        """One line for ``budget_problems``' output, naming the method and the flags that shrink it."""
        return (
            f"{self.method_name} adapter exceeds the paper's budget of PT with {self.budget_tokens} tokens: "
            + "; ".join(problems.values())
            + ". Pick smaller sub_dim_scpp/codebook_size_scpp, sub_dim_scap/codebook_size_scap, r or lodim_r "
            "(see scripts/param_budget.py)"
        )

    # ---- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (``extra_fields`` included)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptTuningConfig:
        """Build from our dict or an original DePT/ACCEPT/ULPT/ADePT config dict; unknown keys go to
        ``extra_fields``.

        The original DPT/ULPT configs hold the prompt rank in ``r`` (read as ``lodim_r``). A config
        without ``max_length`` (HF PEFT prompt tuning, the original DPT/ULPT) gets None when its update is
        not position-wise: no length limit, and no L-column layout for decoder-only positions.
        """
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names and k != "extra_fields"}
        if known.get("peft_type") in _RANK_IN_R and "lodim_r" not in data and "r" in data:
            known["lodim_r"] = data["r"]
        extra = dict(data.get("extra_fields") or {})
        extra.update({k: v for k, v in data.items() if k not in names})
        unknown = sorted(k for k in extra if k not in _ORIGINAL_ONLY)
        if unknown:
            logger.info("adapter config: keeping unknown fields %s in extra_fields", unknown)
        if known.get("prompt_tuning_init") is not None:
            known["prompt_tuning_init"] = str(known["prompt_tuning_init"]).upper()
        declared = {f.name: str(f.type) for f in fields(cls)}
        for name, value in known.items():
            if not _has_declared_type(value, declared[name]):
                raise ValueError(f"field {name!r} must be {declared[name]}, got {value!r}")
        config = cls(**known, extra_fields=extra)
        if "max_length" not in data and not config.update_needs_length:
            config.max_length = None
        return config

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``adapter_config.json`` (sorted keys, indented) into ``save_directory``."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        out = path / CONFIG_NAME
        out.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return out

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> PromptTuningConfig:
        """Read ``directory/adapter_config.json`` (ours or the original format)."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(f"No {CONFIG_NAME} in {directory}.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
            return cls.from_dict(data)
        except (UnicodeDecodeError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: {exc}; fix the file or save the adapter again") from exc


def _has_declared_type(value: Any, declared: str) -> bool:
    """Whether a JSON value fits a field annotation ("int", "bool", "float", "str", "X | None", "dict[...]")."""
    options = [option.strip() for option in declared.split("|")]
    if value is None:
        return "None" in options
    for option in options:
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option.startswith("dict") and isinstance(value, dict):
            return True
    return False
