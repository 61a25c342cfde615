"""What a fit stores of its score: the one-class count only where the metric reads the predicted class."""

from __future__ import annotations

import pytest
import torch

from sweep import config
from sweep.objectives.scoring import fit_score
from tests.conftest import make_raw


class _Majority(torch.nn.Module):
    """Predicts class 0 for every example, with a confidence that ranks the positives first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x[:, 0]
        return torch.stack([torch.full_like(score, 5.0), score], dim=1)


@pytest.mark.parametrize(("metric", "predicted"), [("accuracy", 1), ("balanced-accuracy", 1), ("macro-f1", 1),
                                                   ("auroc", None), ("log-loss", None)])
def test_one_class_is_counted_only_for_metrics_of_the_predicted_class(metric: str, predicted: int | None) -> None:
    cfg = config.validate(make_raw(search={"metric": metric}), source="t")
    y = torch.tensor([0] * 90 + [1] * 10)
    x = torch.where(y == 1, 1.0, 0.0)[:, None] + torch.linspace(0, 0.5, 100)[:, None]
    got = fit_score(cfg, _Majority(), x, y)
    assert got.predicted == predicted
    if metric == "auroc":  # the ranking still separates the classes: not the majority's share
        assert got.value == pytest.approx(1.0)
    if metric == "accuracy":
        assert got.value == pytest.approx(0.9)
