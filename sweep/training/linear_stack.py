"""The torch.optim population's step for a stack of Linear-ReLU layers (SimpleNet, ``model.arch = "mlp"``).

``vmap(grad(loss))`` trains these networks too, but its weight gradients come out transposed (the
update's elementwise passes then run over mismatched strides) and new every step (at K = 32 the
first layer's is 50 MB, and a fresh allocation that size costs page faults on every step). Here the
forward is one batched matmul per layer over the stacked parameters (a batch that every member reads
enters as an expanded view, not K copies), autograd differentiates only each member's loss with
respect to its outputs (any ``train.loss``, ``losses.make_loss`` under ``vmap``) and a penalty in the
loss with respect to the weights (``fit.loss_penalty``), and the layers' backward is written out:
each weight gradient is one batched matmul into a buffer kept across steps, in its parameter's layout.
Members are independent, so each member's gradient is the single fit's up to float rounding; the
update stays ``optimizers.Stepper``'s (``functional.py``). Measured: docs/populations.md
(``benchmarks/population_speed.py --recipes``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch.func import vmap

from sweep.config import TrainConfig
from sweep.training import losses
from sweep.training.fit import LOSS_PENALTIES, loss_penalty
from sweep.training.models import Net
from sweep.training.stacks import linears

Names = list[tuple[str, str]]  # (weight, bias) parameter names of each Linear layer, in order


def layer_names(net: Net) -> Names | None:
    """The Linear layers' parameter names of SimpleNet or the mlp (ReLU between them); None for any other network."""
    if net.arch not in ("simplenet", "mlp"):
        return None
    model = net.build(0)
    by_module = {id(module): name for name, module in model.named_modules()}
    return [(f"{by_module[id(layer)]}.weight", f"{by_module[id(layer)]}.bias") for layer in linears(model)]


def first_layer(params: dict[str, torch.Tensor], names: Names, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
    """Every member's first pre-activation (K, B, h): ``x`` is one batch (B, ...) read by all members when
    ``shared``, else each member's own (K, B, ...)."""
    w, b = params[names[0][0]], params[names[0][1]]
    return torch.baddbmm(b.unsqueeze(1), _inputs(x, int(w.shape[0]), shared=shared), w.transpose(1, 2))


def _inputs(x: torch.Tensor, k: int, *, shared: bool) -> torch.Tensor:
    """The first layer's inputs as (K, B, features): one shared batch expanded (a view, no copy). One batched
    matmul over it measured faster on a CPU than the one wide (B, in) x (in, K*h) matmul, in every layout tried."""
    if shared:
        return x.reshape(int(x.shape[0]), -1).expand(k, -1, -1)
    return x.reshape(k, int(x.shape[1]), -1)


def forward(params: dict[str, torch.Tensor], names: Names, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
    """Every member's outputs (K, B, out): ``first_layer``, then ReLU and one bmm per later layer (as ``batch_step``)."""
    h = first_layer(params, names, x, shared=shared)
    for wn, bn in names[1:]:
        h = torch.baddbmm(params[bn].unsqueeze(1), h.relu(), params[wn].transpose(1, 2))
    return h


Step = Callable[..., tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]


def batch_step(names: Names, decay: set[str], cfg: TrainConfig, y_fit: torch.Tensor, *, shared: bool) -> Step:
    """``functional.py``'s step for this network: (params, buffers, lam, x, y) -> (gradients by name,
    (each member's summed batch loss, its hits)), the contract of its ``vmap(grad(loss))``.

    Autograd differentiates each member's loss (any ``train.loss``) with respect to its outputs, and a penalty in
    the loss with respect to the weights; the layers' backward is written out (``_backward``). Why: autograd's
    weight gradients came transposed (the update's elementwise passes then ran over mismatched strides) and new
    each step (a 50 MB first-layer gradient at K = 32 cost more in page faults than its matmul)."""
    per_member = vmap(losses.make_loss(cfg, y_fit), in_dims=(0, None if shared else 0))
    decayed = [n for pair in names for n in pair if n in decay]
    penalty = vmap(lambda lam, *ws: loss_penalty(cfg, lam, ws)) if cfg.penalty in LOSS_PENALTIES \
        else None
    kept: dict[str, torch.Tensor] = {}  # each weight's gradient buffer, new only when K changes

    def step(params: dict[str, torch.Tensor], buffers: Any, lam: torch.Tensor, x: torch.Tensor,  # noqa: ANN401, ARG001
             y: torch.Tensor) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        with torch.no_grad():
            acts, pre = [], first_layer(params, names, x, shared=shared)
            for wn, bn in names[1:]:  # acts[i]: the input of layer i + 1
                acts.append(pre.relu())
                pre = torch.baddbmm(params[bn].unsqueeze(1), acts[-1], params[wn].transpose(1, 2))
        with torch.enable_grad():
            out = pre.requires_grad_()
            data = per_member(out, y)  # (K,) mean losses, each member's own
            (grad,) = torch.autograd.grad(data.sum(), [out])
        with torch.no_grad():
            grads = _backward(kept, params, names, acts, grad, x, shared=shared)
        if penalty is not None:
            with torch.enable_grad():
                ws = [params[n].detach().requires_grad_() for n in decayed]
                extra = torch.autograd.grad(cast(torch.Tensor, penalty(lam, *ws)).sum(), ws)
            for n, g in zip(decayed, extra, strict=True):
                grads[n].add_(g)
        return grads, (data.detach() * out.shape[1], losses.hits(cfg, out.detach(), y))

    return step


def _backward(kept: dict[str, torch.Tensor], params: dict[str, torch.Tensor], names: Names, acts: list[torch.Tensor],
              grad: torch.Tensor, x: torch.Tensor, *, shared: bool) -> dict[str, torch.Tensor]:
    """Every parameter's gradient from the outputs' gradient ``grad`` (K, B, out): last layer to first, each
    weight's by one matmul into its buffer in the parameter's layout, through each ReLU (``threshold_backward``
    on its output: positive exactly where its input was)."""
    grads: dict[str, torch.Tensor] = {}
    for i in range(len(names) - 1, 0, -1):
        wn, bn = names[i]
        below = torch.ops.aten.threshold_backward(torch.bmm(grad, params[wn]), acts[i - 1], 0)
        grads[wn] = torch.bmm(grad.transpose(1, 2), acts[i - 1], out=_buffer(kept, wn, params[wn]))
        grads[bn] = grad.sum(1)
        grad = below
    w1, b1 = names[0]
    grads[w1] = _first_weight_grad(_buffer(kept, w1, params[w1]), grad, x, shared=shared)
    grads[b1] = grad.sum(1)
    return grads


def _buffer(kept: dict[str, torch.Tensor], name: str, like: torch.Tensor) -> torch.Tensor:
    if name not in kept or kept[name].shape != like.shape:
        kept[name] = torch.empty_like(like, memory_format=torch.contiguous_format)
    return kept[name]


def _first_weight_grad(out: torch.Tensor, dh: torch.Tensor, x: torch.Tensor, *, shared: bool) -> torch.Tensor:
    """The first layer's weight gradient (K, h, in) written into ``out``: ``dh`` (K, B, h) against the inputs."""
    return torch.bmm(dh.transpose(1, 2), _inputs(x, int(out.shape[0]), shared=shared), out=out)
