"""The random numbers a trial draws while it trains (dropout masks, a user's own noise), seeded by its seed.

A trial's initialisation (``Net.build(seed)``) and data order (``Generator().manual_seed(seed)``)
have their own seeded streams; everything else a network draws during training comes from
PyTorch's global generator. ``seeded`` forks that generator around a training and seeds it with
``noise_seed(seed)``, so a trial run twice draws the same masks, and two lambdas of one study
(same seed) draw the same masks at the same step: common random numbers, the pairing the
selection rules rest on. The caller's global stream is restored afterwards.

``Streams`` keeps one such stream per member when members train in turn in one process
(``sequential.py``): each member's draws are those it would make alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Added to the trial's seed, so training noise is not the stream that drew the initial weights
# (Net.build seeds the same generator with the seed itself).
NOISE_OFFSET = 1 << 32


def noise_seed(seed: int) -> int:
    """The global generator's seed for the training of a member with ``seed``."""
    return seed + NOISE_OFFSET


def _devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """The global generator (CPU, and ``device``'s when CUDA) seeded for a member with ``seed``; restored on exit."""
    with torch.random.fork_rng(devices=_devices(device)):
        torch.manual_seed(noise_seed(seed))
        yield


class Streams:
    """One global-generator state per member, swapped in while that member trains (use inside ``forked``)."""

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.states: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        for s in seeds:
            torch.manual_seed(noise_seed(s))
            self.states.append((torch.get_rng_state(), torch.cuda.get_rng_state(device) if self.cuda else None))

    @contextmanager
    def member(self, i: int) -> Iterator[None]:
        cpu, gpu = self.states[i]
        torch.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, self.device)
        yield
        self.states[i] = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.cuda else None)


@contextmanager
def forked(device: torch.device) -> Iterator[None]:
    """The caller's global generator state, restored on exit (``Streams`` sets and reads it freely inside)."""
    with torch.random.fork_rng(devices=_devices(device)):
        yield


def draws_random(model: torch.nn.Module, x: torch.Tensor) -> bool:
    """Whether a training-mode forward pass of ``model`` on ``x`` draws from the global generator (dropout, noise)."""
    with forked(x.device), torch.no_grad():
        before = torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None
        model.train()
        model(x)
        after = torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None
    same = torch.equal(before[0], after[0]) and (before[1] is None or torch.equal(before[1], after[1]))  # type: ignore[arg-type]
    return not same
