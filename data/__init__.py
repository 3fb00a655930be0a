"""Task registry, dataset loading/splitting, and tokenisation for the seq2seq, causal and classifier paths.

Import the submodules directly: ``data.tasks`` (registry), ``data.loading`` (``load_task_splits``),
``data.preprocess`` (``tokenize_splits``, ``PaddingCollator``, ``max_target_length``).

Faithful to DePT (kept on purpose, so numbers stay comparable):
  * winogrande's template shows ``option1`` twice and never ``option2`` (DePT's bug);
  * STS-B targets are ``numpy.round(label, 1)`` strings, not T5's 0.2 grid;
  * MRQA targets, ``em`` and ``f1`` use only the first gold answer;
  * the split permutation is ``torch.randperm`` seeded with 42 whatever ``--seed`` is;
  * sources are padded to ``--max_seq_length`` by default (``pad_to_max_length=True``).
Fixed or added (deviations, each explained in docs/fidelity.md):
  * WSC span text is regex-escaped before matching (the original inserted it unescaped);
  * k-shot sampling uses fresh class counters per call (the original mutated a shared dict);
    k-shot on a task without class counts raises a ValueError instead of a KeyError;
  * MultiRC keeps the question id (``group_id``) and also reports per-question ``em``;
  * MRQA also reports ``em_all_answers``/``f1_all_answers`` (max over all gold answers, which are
    punctuation-padded like the target);
  * decoder-only rows: ``[BOS] + source + "Label :" + target + [EOS]``, no special tokens in the
    middle, the source (not the label) is truncated to fit L (see ``data.preprocess``);
  * rows without a gold label are kept (target ``""``, label -1) and scoring is skipped with a warning.
"""

from data.tasks import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task"]
