"""The training side: models, data, a single fit and populations of fits.

Nothing here imports Optuna (``tests/test_imports.py`` enforces it): training
knows tensors and a ``TrainConfig``, never trials or studies.
"""
