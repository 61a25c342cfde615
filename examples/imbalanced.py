"""An imbalanced classification data factory: one digit against the rest, on the MNIST sample shipped in the package.

``studies/examples-seven-vs-rest.toml`` names it: label 1 for a 7 (about 10% of the digits), 0 for every other
digit. Accuracy rewards predicting "not a 7" everywhere (0.90); balanced accuracy, macro-F1 and AUROC do not
(docs/metrics.md). Run it from the repository root::

    PYTHONPATH=. sweep run studies/examples-seven-vs-rest.toml
"""

from __future__ import annotations

import numpy as np

from sweep.training import data

DIGIT = 7


def seven_vs_rest() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): the sample's 28x28 uint8 images flattened, labels 1 (a 7) or 0."""
    ds = data.load("mnist-sample")
    flat = lambda images: images.x.reshape(len(images), -1).numpy()  # noqa: E731 - uint8: scaled to [0, 1] on load
    binary = lambda images: (images.y.numpy() == DIGIT).astype(np.int64)  # noqa: E731
    return flat(ds.train), binary(ds.train), flat(ds.test), binary(ds.test)
