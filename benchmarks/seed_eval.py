"""The seed document's evaluation loop (its step 6), as written: the baseline every speed benchmark times.

Imported by the benchmark scripts beside it (their folder is on ``sys.path`` when they run).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader


def seed_accuracy(model: nn.Module, loader: DataLoader, device: torch.device | None = None) -> float:
    """Accuracy of ``model`` over ``loader``: eval mode, no grad, ``torch.max`` and ``.item()`` per batch."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch_data, target in loader:
            if device is not None:
                batch_data, target = batch_data.to(device), target.to(device)
            _, predicted = torch.max(model(batch_data).data, 1)
            total += target.size(0)
            correct += (predicted == target).sum().item()
    return correct / total
