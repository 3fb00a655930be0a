"""Task registry, dataset loading/splitting, and tokenisation for the seq2seq, causal and classifier paths.

Import the submodules directly: ``data.tasks`` (registry), ``data.loading`` (``load_task_splits``),
``data.preprocess`` (``tokenize_splits``, ``PaddingCollator``, ``max_target_length``).
"""

from data.tasks import TASKS, TaskSpec, get_task

__all__ = ["TASKS", "TaskSpec", "get_task"]
