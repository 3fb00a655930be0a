"""Training support for ``train.py``: argument compatibility, fail-fast checks, optimizer, trainer, outputs."""
