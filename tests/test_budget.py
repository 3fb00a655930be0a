"""Parameter formulas and the budget solver reproduce the paper's T5-base numbers."""

import pytest

from peft import AdapterConfigError, PromptTuningConfig
from peft.budget import count_adapter_params, feasible_codebooks, num_subspaces, paper_budget


@pytest.mark.parametrize(
    ("m", "r", "length", "expected"),
    [(40, 45, 256, 76_800), (80, 15, 256, 76_800), (60, 24, 512, 76_800), (60, 30, 348, 79_560)],
)
def test_released_dept_runs(m, r, length, expected):
    assert count_adapter_params(dim=768, num_virtual_tokens=m, max_length=length, r=r).total == expected


def test_budget_split_and_solver():
    budget = paper_budget(768, 60)
    assert (budget.prepended, budget.added) == (46_080, 30_720)
    options = feasible_codebooks(60, 768, budget.prepended)
    assert all(o.params <= budget.prepended for o in options)
    assert options == sorted(options, key=lambda o: (-o.params, o.sub_dim))
    assert any((o.sub_dim, o.codebook_size) == (8, 7) for o in options)  # an ACCEPT script setting
    added = feasible_codebooks(256, 768, budget.added)
    assert any((o.sub_dim, o.codebook_size, o.params) == (256, 20, 30_720) for o in added)


def test_sub_dim_must_divide_width():
    with pytest.raises(AdapterConfigError, match="sub_dim_scpp 33 does not divide") as raised:
        num_subspaces(768, 33, field="sub_dim_scpp")
    assert raised.value.field == "sub_dim_scpp"


def test_sub_dim_suggestion_lists_divisors_near_the_request_and_the_default():
    with pytest.raises(ValueError) as info:
        num_subspaces(384, 7, field="sub_dim_scpp", default=16)
    assert str(info.value).endswith("divisors of 384 near 7: 3, 4, 6, 8, 12, 16 (default 16).")
    with pytest.raises(ValueError) as info:
        num_subspaces(384, 100, field="sub_dim_scap", default=32)
    assert "divisors of 384 near 100: 32, 48, 64, 96, 128, 192 (default 32)." in str(info.value)


def test_config_suggests_its_own_default_sub_dim():
    config = PromptTuningConfig(scpp=True, sub_dim_scpp=7, max_length=16)
    with pytest.raises(ValueError, match=r"near 7: 3, 4, 6, 8, 12, 16 \(default 16\)"):
        config.validate(token_dim=384)
