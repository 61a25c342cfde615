"""A regression data factory: scikit-learn's bundled diabetes data (442 patients, 10 features, no download).

``studies/examples-diabetes.toml`` trains a small MLP on it with ``train.loss = "mse"`` and chooses lambda
by the validation RMSE (``search.metric = "rmse"``); ``--set model.hidden=[]`` makes it a linear model.
The target (disease progression a year later) is standardised with the training part's mean and standard
deviation, so the RMSE is in standard deviations of the target (1.0: predicting the mean). Run it from the
repository root::

    PYTHONPATH=. sweep run studies/examples-diabetes.toml
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes

TEST = 88  # patients held out as the test set (a fifth); lambda-sweep splits the other 354 for validation itself


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 10 standardised features, a standardised float target, a fixed split."""
    x, y = load_diabetes(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[TEST:], order[:TEST]
    mean, std = x[train].mean(0), x[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    x = ((x - mean) / std).astype(np.float32)
    y = ((y - y_mean) / y_std).astype(np.float32)
    return x[train], y[train], x[test], y[test]
