"""The task registry: one frozen declaration per ``--task_name`` (DePT's ``src/tasks.py`` semantics).

Every task is a :class:`TaskSpec` value; the behaviour (template, label rule, split rule) is selected
by declarative fields and implemented once in :mod:`data.loading` and :mod:`metrics.postprocess`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

SplitRule = Literal["small", "large", "neither"]
LabelRule = Literal["int", "stsb", "winogrande", "scitail", "qa"]
TextTransform = Literal["none", "remove_markup", "pad_punctuation", "wsc_spans"]

LOGICAL_SPLITS = ("train", "validation", "test")

# The split permutation always uses this seed, whatever --seed is (DePT builds tasks with seed=42).
SPLIT_SEED = 42
# Rows held out of HF train as the logical validation split for "large" tasks.
LARGE_HOLDOUT = 1000


def _split_map(
    train: str = "train", validation: str = "validation", test: str = "validation"
) -> tuple[tuple[str, str], ...]:
    return (("train", train), ("validation", validation), ("test", test))


@dataclass(frozen=True)
class TaskSpec:
    """Declaration of one task.

    Attributes:
        name: the ``--task_name`` string (also the ``task`` column and the ``--add_prefix`` word).
        hub_id, hub_config: namespaced, script-free HuggingFace dataset id and config.
        fields: ``(prefix, field)`` pairs; source = ``" ".join([prefix1, text1, prefix2, text2, ...])``.
        text_transform: applied to every field text before templating (``wsc_spans`` marks the
            ``text`` field with ``*``/``#`` around span1/span2, docs/fidelity.md#f-wsc).
        label_field, label_rule: where the gold label is and how it becomes the target string.
        split_rule: ``small`` (HF validation halved), ``large`` (1000 train rows held out) or
            ``neither`` (HF splits used as they are), docs/fidelity.md#f-split.
        hf_splits: ``(logical split, HF split name)`` pairs (see :attr:`split_map`).
        metric_names: metric keys in the order they are produced; ``metric_for_best_model`` picks
            the best checkpoint (greater is better).
        labels_list: label strings (None for QA); only used for ``max_target_length`` and validity.
        k_shot_classes: number of classes for ``--k_shot_example`` (None: k-shot not defined).
        max_train_rows: train is cut to its first rows after splitting (yelp_polarity: 100,000).
        extra_required: fields that must exist besides the template and label fields.
    """

    name: str
    hub_id: str
    hub_config: str | None
    fields: tuple[tuple[str, str], ...]
    label_field: str
    label_rule: LabelRule
    split_rule: SplitRule
    metric_names: tuple[str, ...]
    metric_for_best_model: str
    labels_list: tuple[str, ...] | None
    hf_splits: tuple[tuple[str, str], ...] = field(default_factory=_split_map)
    text_transform: TextTransform = "none"
    k_shot_classes: int | None = None
    max_train_rows: int | None = None
    extra_required: tuple[str, ...] = ()

    @property
    def split_map(self) -> dict[str, str]:
        """Logical split (train/validation/test) -> HF split name."""
        return dict(self.hf_splits)

    @property
    def is_qa(self) -> bool:
        """True for the MRQA extractive-QA tasks (free-text targets, SQuAD metrics)."""
        return self.label_rule == "qa"

    @property
    def is_regression(self) -> bool:
        """True for STS-B (float targets)."""
        return self.label_rule == "stsb"

    @property
    def num_labels(self) -> int | None:
        """Classifier head size: 1 for STS-B regression, None for QA, else the number of classes."""
        if self.is_qa:
            return None
        if self.is_regression:
            return 1
        return len(self.labels_list)

    @property
    def required_fields(self) -> tuple[str, ...]:
        """Fields a raw row must have (template fields, then extras); the label field is optional."""
        names = [f for _, f in self.fields] + list(self.extra_required)
        return tuple(dict.fromkeys(names))


BINARY = ("0", "1")
TERNARY = ("0", "1", "2")
# STS-B's labels_list: the 0.2 grid "0.0" ... "5.0" (26 strings); only sets max_target_length.
STSB_LABELS = tuple(f"{i * 0.2:.1f}" for i in range(26))
QA_METRICS = ("em", "f1")


def _glue(name: str, fields, rule: SplitRule, metrics=("accuracy",), best="accuracy", labels=BINARY, **kw):
    return TaskSpec(
        name=name,
        hub_id="nyu-mll/glue",
        hub_config=kw.pop("config", name),
        fields=fields,
        label_field="label",
        label_rule=kw.pop("label_rule", "int"),
        split_rule=rule,
        metric_names=metrics,
        metric_for_best_model=best,
        labels_list=labels,
        k_shot_classes=kw.pop("k", len(labels)),
        **kw,
    )


def _superglue(name: str, config: str, fields, metrics=("accuracy",), best="accuracy", labels=BINARY, **kw):
    return TaskSpec(
        name=name,
        hub_id="aps/super_glue",
        hub_config=config,
        fields=fields,
        label_field="label",
        label_rule="int",
        split_rule="small",
        metric_names=metrics,
        metric_for_best_model=best,
        labels_list=labels,
        k_shot_classes=len(labels),
        **kw,
    )


def _mrqa(name: str, hub_name: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        hub_id=f"lucadiliello/{hub_name}",
        hub_config=None,
        fields=(("question:", "question"), ("context:", "context")),
        label_field="answers",
        label_rule="qa",
        split_rule="large",
        metric_names=QA_METRICS,
        metric_for_best_model="em",
        labels_list=None,
        text_transform="pad_punctuation",
    )


S1S2 = (("sentence1:", "sentence1"), ("sentence2:", "sentence2"))
PREMISE_HYPOTHESIS = (("premise:", "premise"), ("hypothesis:", "hypothesis"))

_TASK_LIST: tuple[TaskSpec, ...] = (
    # GLUE (templates: docs/fidelity.md#f-template)
    _glue("cola", (("sentence:", "sentence"),), "small", ("matthews_correlation",), "matthews_correlation"),
    _glue("sst2", (("sentence:", "sentence"),), "large"),
    _glue("mrpc", S1S2, "small", ("f1", "accuracy")),
    _glue("qqp", (("question1:", "question1"), ("question2:", "question2")), "large", ("f1", "accuracy")),
    _glue("stsb", S1S2, "small", ("pearson", "spearmanr"), "pearson", STSB_LABELS, label_rule="stsb", k=2),
    _glue(
        "mnli",
        PREMISE_HYPOTHESIS,
        "neither",
        labels=TERNARY,
        hf_splits=_split_map(validation="validation_mismatched", test="validation_matched"),
    ),
    _glue("qnli", (("question:", "question"), ("sentence:", "sentence")), "large"),
    _glue("rte", S1S2, "small"),
    # SuperGLUE; HF test splits are unlabeled and never used.
    _superglue("superglue-boolq", "boolq", (("question:", "question"), ("passage:", "passage"))),
    _superglue(
        "superglue-cb", "cb", PREMISE_HYPOTHESIS, ("f1_multiclass", "accuracy"), "f1_multiclass", TERNARY
    ),
    _superglue(
        "superglue-multirc",
        "multirc",
        (("question:", "question"), ("answer:", "answer"), ("paragraph:", "paragraph")),
        # The original reports only "f1" (F1a over answer options); "em" (per-question exact
        # match, SuperGLUE's second MultiRC metric) is added here and computed from group ids.
        ("f1", "em"),
        "f1",
        text_transform="remove_markup",
        extra_required=("idx",),
    ),
    _superglue("superglue-wic", "wic", S1S2 + (("word:", "word"),)),
    _superglue(
        "superglue-wsc.fixed",
        "wsc.fixed",
        (("text:", "text"),),
        text_transform="wsc_spans",
        extra_required=("span1_index", "span2_index", "span1_text", "span2_text"),
    ),
    # MRQA 2019 (docs/fidelity.md#f-mrqa)
    _mrqa("nq", "naturalquestionsshortqa"),
    _mrqa("hotpotqa", "hotpotqa"),
    _mrqa("searchqa", "searchqa"),
    _mrqa("newsqa", "newsqa"),
    # DePT's extra tasks (not in the ACCEPT paper)
    TaskSpec(
        # FAITHFUL BUG: DePT's template shows option1 twice ("option0: {option1} option1: {option1}")
        # and never shows option2, so the model cannot see the second candidate. Reproduced on
        # purpose so that numbers stay comparable with DePT; option2 is therefore not required.
        name="winogrande",
        hub_id="allenai/winogrande",
        hub_config="winogrande_xl",
        fields=(("sentence:", "sentence"), ("option0:", "option1"), ("option1:", "option1")),
        label_field="answer",
        label_rule="winogrande",
        split_rule="large",
        metric_names=("accuracy",),
        metric_for_best_model="accuracy",
        labels_list=BINARY,
    ),
    TaskSpec(
        name="yelp_polarity",
        hub_id="fancyzhx/yelp_polarity",
        hub_config=None,
        fields=(("sentence:", "text"),),
        label_field="label",
        label_rule="int",
        split_rule="large",
        metric_names=("accuracy",),
        metric_for_best_model="accuracy",
        labels_list=BINARY,
        hf_splits=_split_map(test="test"),
        max_train_rows=100_000,
    ),
    TaskSpec(
        # Small rule on HF validation (1304 -> 652/652); the HF test split is never used.
        name="scitail",
        hub_id="allenai/scitail",
        hub_config="snli_format",
        fields=(("premise:", "sentence1"), ("hypothesis:", "sentence2")),
        label_field="gold_label",
        label_rule="scitail",
        split_rule="small",
        metric_names=("accuracy",),
        metric_for_best_model="accuracy",
        labels_list=BINARY,
        k_shot_classes=2,
    ),
    TaskSpec(
        name="paws",
        hub_id="google-research-datasets/paws",
        hub_config="labeled_final",
        fields=S1S2,
        label_field="label",
        label_rule="int",
        split_rule="neither",
        metric_names=("accuracy",),
        metric_for_best_model="accuracy",
        labels_list=BINARY,
        hf_splits=_split_map(test="test"),
    ),
)

TASKS: Mapping[str, TaskSpec] = MappingProxyType({t.name: t for t in _TASK_LIST})

# The 17 tasks of the ACCEPT paper (GLUE, SuperGLUE, MRQA), in the paper's order.
PAPER_TASKS: tuple[str, ...] = tuple(t.name for t in _TASK_LIST[:17])
# scitail's gold_label strings -> target (entailment "0", neutral "1").
SCITAIL_LABELS: Mapping[str, str] = MappingProxyType({"entailment": "0", "neutral": "1"})


def get_task(name: str) -> TaskSpec:
    """Return the declaration of ``name``; raises ``ValueError`` listing the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}. Valid task names: {', '.join(TASKS)}") from None
