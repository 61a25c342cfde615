"""The Laplace evidence (sweep.training.laplace, sweep.objectives.evidence): exact on a tiny network, the prior mapping,
the one-run search, `sweep evidence`, and the one-line error without the extra."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.func import functional_call, jacrev

from sweep.cli import main
from sweep.training.laplace import BIAS_PRECISION, log_evidence, marglik_search, prior_precision

pytest.importorskip("laplace")  # CI installs the evidence extra; the missing-extra test below needs no import


def tiny_problem(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 4-3-3 network trained a little on 40 points: small enough for the full GGN."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 4, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-2)
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, x, y


def direct_log_evidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor) -> float:
    """log p(D|w) - 1/2 w'P0 w - 1/2 (log det(GGN + P0) - log det P0), the GGN summed example by example."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)

    def logits(flat: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        chunks, i = {}, 0
        for k in names:
            n = params[k].numel()
            chunks[k] = flat[i:i + n].view_as(params[k])
            i += n
        return functional_call(model, chunks, (xi.unsqueeze(0),)).squeeze(0)

    w = torch.cat([params[k].reshape(-1) for k in names]).double()
    sizes = [params[k].numel() for k in names]
    prior = torch.cat([torch.full((n,), float(d), dtype=torch.float64) for n, d in zip(sizes, delta, strict=True)])
    ggn = torch.zeros(w.numel(), w.numel(), dtype=torch.float64)
    loglik = 0.0
    for xi, yi in zip(x, y, strict=True):
        f = logits(w.float(), xi).double()
        p = f.softmax(0)
        jac = jacrev(logits)(w.float(), xi).double()  # (classes, params)
        ggn += jac.T @ (torch.diag(p) - torch.outer(p, p)) @ jac
        loglik += float(f.log_softmax(0)[yi])
    post = ggn + torch.diag(prior)
    return loglik - 0.5 * float(w @ (prior * w)) - 0.5 * (float(torch.logdet(post)) - float(prior.log().sum()))


@pytest.mark.parametrize("decay_bias", [True, False])
def test_log_evidence_matches_the_full_ggn_computed_directly(decay_bias: bool) -> None:
    model, x, y = tiny_problem()
    lam = 3e-3
    delta = prior_precision(model, lam=lam, n=len(y), decay_bias=decay_bias)
    ours = log_evidence(model, x, y, lam=lam, decay_bias=decay_bias, structure="full")
    assert math.isclose(ours, direct_log_evidence(model, x, y, delta), rel_tol=1e-4)


def test_prior_precision_is_n_times_lambda_on_the_decayed_parameters() -> None:
    model, _, _ = tiny_problem()
    n, lam = 40, 2.5e-3
    assert prior_precision(model, lam=lam, n=n, decay_bias=True).tolist() == pytest.approx([n * lam] * 4)
    # weight, bias, weight, bias: biases keep a fixed vague prior, the same for every lambda
    assert prior_precision(model, lam=lam, n=n, decay_bias=False).tolist() == pytest.approx(
        [n * lam, BIAS_PRECISION, n * lam, BIAS_PRECISION])


def test_evidence_ranks_lambdas_and_kron_is_close_to_full() -> None:
    model, x, y = tiny_problem()
    kron = [log_evidence(model, x, y, lam=lam, decay_bias=True) for lam in (1e-4, 1e-2, 10.0)]
    full = [log_evidence(model, x, y, lam=lam, decay_bias=True, structure="full") for lam in (1e-4, 1e-2, 10.0)]
    assert all(math.isfinite(v) for v in kron)
    assert kron[2] < max(kron[:2]) and full[2] < max(full[:2])  # a prior far too strong is less likely


def test_marglik_search_returns_a_lambda_in_range_and_its_trajectory() -> None:
    model, x, y = tiny_problem()
    seen = []
    result = marglik_search(model, x, y, lr=0.1, batch_size=8, epochs=3, lam_init=1e-3, lam_range=(1e-5, 1e-2),
                            seed=0, on_epoch=seen.append)
    assert 1e-5 <= result.lam <= 1e-2
    assert [e.epoch for e in result.trajectory] == [1, 2, 3] == [e.epoch for e in seen]
    assert result.lam == min(max(result.unclamped, 1e-5), 1e-2)
    assert all(math.isfinite(e.log_evidence) and e.lam > 0 for e in result.trajectory)


STUDY = """
name = "{name}"
[data]
dataset = "mnist-sample"
holdout = 1000
[train]
lr = 0.1
epochs = 1
device = "cpu"
[search]
sampler = "{sampler}"
n_trials = {n}
pruner = "none"
validation = "{validation}"
"""


def _run(tmp_path: Path, **fields: Any) -> tuple[str, Any]:
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(**fields))
    url = f"sqlite:///{tmp_path / 's.db'}"
    return url, CliRunner().invoke(main, ["run", str(path), "--storage", url])


@pytest.mark.slow
def test_evidence_study_and_marglik_study_run_end_to_end(tmp_path: Path) -> None:
    url, result = _run(tmp_path, name="ev", sampler="random", n=2, validation="evidence")
    assert result.exit_code == 0, result.output
    assert "log evidence" in result.stdout and "test accuracy 0." in result.stdout
    study = optuna.load_study(study_name="ev", storage=url)
    for t in study.get_trials():
        assert t.value == t.user_attrs["log_evidence"] < 0 and t.user_attrs["validation"] == "evidence"
    url, result = _run(tmp_path, name="ml", sampler="marglik", n=1, validation="holdout")
    assert result.exit_code == 0, result.output
    (trial,) = optuna.load_study(study_name="ml", storage=url).get_trials()
    assert 1e-5 <= trial.params["lambda"] <= 1e-2 and len(trial.user_attrs["marglik_trajectory"]) == 1
    best = json.loads(CliRunner().invoke(main, ["best", "ml", "--storage", url, "--format", "json"]).stdout)
    assert best["lambda"] == trial.params["lambda"] and 0.5 < best["test_acc"] <= 1


@pytest.mark.slow
def test_sweep_evidence_scores_a_holdout_study_and_names_the_picks(tmp_path: Path) -> None:
    url, result = _run(tmp_path, name="ho", sampler="random", n=2, validation="holdout")
    assert result.exit_code == 0, result.output
    out = CliRunner().invoke(main, ["evidence", "ho", "--storage", url])
    assert out.exit_code == 0, out.output
    study = optuna.load_study(study_name="ho", storage=url)
    stored = study.user_attrs["evidence"]
    assert sorted(int(k) for k in stored) == [0, 1]
    best_ev = max(stored, key=lambda k: stored[k]["log_evidence"])
    assert f"evidence picks lambda {stored[best_ev]['lambda']:.4g} (trial {best_ev}," in out.stdout


def test_without_the_extra_the_study_fails_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(STUDY.format(name="ev", sampler="random", n=2, validation="evidence"))
    db = tmp_path / "s.db"
    code = ("import sys; sys.modules['laplace'] = None; from sweep.cli import main; "
            f"main(['run', {str(path)!r}, '--storage', 'sqlite:///{db}'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: search.validation = 'evidence' and search.sampler = 'marglik' need the optional extra laplace-torch; "
        "install it with: pip install -e '.[evidence]'"]
    assert not db.exists()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"penalty": "l1"}, "need train.penalty 'l2' or 'l2-loss'"),
])
def test_evidence_needs_an_l2_penalty(tiny_cfg: Any, overrides: dict[str, Any], message: str) -> None:
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_cfg(train=overrides, search={"validation": "evidence"})


@pytest.mark.parametrize("batch", [5, "auto"])
def test_evidence_refuses_populations(tiny_cfg: Any, batch: int | str) -> None:
    # A population would score its members on a holdout split: the study would silently be a holdout study.
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match="trains its trials one at a time: set search.batch = 1"):
        tiny_cfg(search={"validation": "evidence", "batch": batch})


def test_marglik_needs_one_trial(tiny_cfg: Any) -> None:
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match="set search.n_trials = 1"):
        tiny_cfg(search={"sampler": "marglik", "n_trials": 3})
