"""Scoring of generated strings: the paper's metrics (x100) and the text post-processing they need."""

from metrics.metrics import compute_task_metrics, count_invalid, is_unlabeled

__all__ = ["compute_task_metrics", "count_invalid", "is_unlabeled"]
