"""The population step's tail as one C function, compiled on first use: the CPU fast path of ``stacks.step``.

Why: at the quick start's K = 5 a step's two first-layer matmuls are about 0.7 ms, and the
thirty-odd PyTorch calls between them (the first layer's bias and ReLU, the second layer, the
softmax and its loss, their gradients and updates) took another 0.25-0.4 ms, mostly per-call
cost on tensors of a few thousand floats. ``torch.compile`` of those calls was no faster, or
slower (docs/performance.md). ``fused_tail.c`` does all of them in one loop per member, in
about 0.1 ms, so the step is the two matmuls (still PyTorch's) plus this one call.

How: the C file beside this module is compiled by the system's C compiler (``$CC``, else ``cc``)
into a cache folder the first time it is needed (under a second), keyed by the source, the
compiler, its flags and the CPU, then loaded with ctypes. ctypes releases the GIL during the call,
so CPU lanes (threads) run it side by side. It applies to 2-layer networks (SimpleNet, an mlp with
one hidden layer) in float32 on the CPU. Elsewhere, on a machine without a C compiler, or with
``SWEEP_FUSED=0`` in the environment, ``stacks`` runs its eager step: the same arithmetic up to
float rounding (tests/training/test_fused.py compares them); the quick start's search took 13-45% longer
that way (docs/performance.md, "The fused tail").
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("fused_tail.c")
FLAGS = ("-O3", "-fopenmp-simd", "-fPIC", "-shared")
NATIVE = "-march=native"  # the machine's own vector width; dropped if the compiler refuses it

_I, _P = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES: list[Any] = [_I, _I, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P, _I, _P, ctypes.c_float, _P, _I, _P, _I]


def enabled() -> bool:
    """Whether the fused tail is wanted: not switched off with ``SWEEP_FUSED=0``."""
    return os.environ.get("SWEEP_FUSED", "1").strip() not in ("0", "false", "no", "off")


def available() -> bool:
    """Whether the fused tail can run here: wanted, and its library compiled and loaded."""
    return enabled() and _library()[0] is not None


def why_not() -> str | None:
    """Why the fused tail is not used on this machine (None when it is)."""
    if not enabled():
        return f"switched off with SWEEP_FUSED={os.environ['SWEEP_FUSED']}"
    return _library()[1]


@dataclass(frozen=True)
class Weights:
    """A cohort's second layer, biases, scale and decay factors, as the C call takes them: addresses of
    contiguous float32 CPU tensors, checked once (``prepare``) instead of at every step."""

    k: int
    width: int
    classes: int
    scaled: bool
    pointers: tuple[int, ...]  # w2, b2, b1, scale, shrink_w, shrink_b
    tensors: tuple[torch.Tensor, ...]  # the same tensors, kept alive while their addresses are in use


def prepare(ws: list[torch.Tensor], bs: list[torch.Tensor], *, scale: torch.Tensor, shrink_w: torch.Tensor,
            shrink_b: torch.Tensor, scaled: bool) -> Weights | None:
    """The fused tail's view of a cohort's tensors, or None where it does not apply: a network of other than
    two layers, another device or dtype, a view, no compiled library, or ``SWEEP_FUSED=0``. Call it again
    whenever the cohort replaces these tensors (it updates them in place otherwise)."""
    if len(ws) != 2 or len(bs) != 2:
        return None
    tensors = (ws[1], bs[1], bs[0], scale, shrink_w, shrink_b)
    if not all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (ws[0], *tensors)):
        return None
    if not all(t.is_contiguous() for t in tensors):
        return None
    if not available():
        return None
    _check_shapes(ws, bs, scale=scale, shrink_w=shrink_w, shrink_b=shrink_b)
    k, classes, width = ws[1].shape
    return Weights(k, width, classes, scaled, tuple(t.data_ptr() for t in tensors), tensors)


def _check_shapes(ws: list[torch.Tensor], bs: list[torch.Tensor], *, scale: torch.Tensor, shrink_w: torch.Tensor,
                  shrink_b: torch.Tensor) -> None:
    """The C loop indexes these tensors by K, C and W alone: a shape off by one would read or write past them."""
    if ws[1].dim() != 3 or ws[0].dim() != 3:
        raise ValueError(f"fused tail: expected weights of shape (K, W, F) and (K, C, W), got {tuple(ws[0].shape)} "
                         f"and {tuple(ws[1].shape)}; build the cohort with a 2-layer network")
    k, classes, width = ws[1].shape
    # Biases and factors may carry singleton dimensions ((K, 1, W), (K, 1, 1)): their sizes are what count.
    if tuple(ws[0].shape[:2]) != (k, width):
        raise ValueError(f"fused tail: first layer weight has shape {tuple(ws[0].shape[:2])}, expected {(k, width)} "
                         f"for K = {k} members of W = {width} hidden units; the cohort's tensors disagree")
    sizes = {"second layer bias": (bs[1], k * classes), "first layer bias": (bs[0], k * width), "scale": (scale, k),
             "shrink_w": (shrink_w, k), "shrink_b": (shrink_b, k)}
    for name, (t, expected) in sizes.items():
        if t.shape[0] != k or t.numel() != expected:
            raise ValueError(f"fused tail: {name} has shape {tuple(t.shape)}, expected {expected} values over K = {k} "
                             f"members (W = {width} hidden units, C = {classes} classes); the cohort's tensors disagree")


def _check_step(p: Weights, first_matmul: torch.Tensor, yb: torch.Tensor, losses: torch.Tensor,
                hits: torch.Tensor) -> None:
    """A step's inputs, checked by their attributes only (no pass over the data: labels are checked in C)."""
    g, b = yb.shape
    if yb.dtype != torch.int64 or yb.device.type != "cpu" or first_matmul.dtype != torch.float32 \
            or first_matmul.device.type != "cpu":
        raise ValueError(f"fused tail: expected int64 labels and float32 activations on the CPU, got {yb.dtype} "
                         f"on {yb.device} and {first_matmul.dtype} on {first_matmul.device}")
    if g < 1 or p.k % g or first_matmul.numel() != p.k * b * p.width:
        raise ValueError(f"fused tail: {g} group(s) of {b} labels and activations of shape {tuple(first_matmul.shape)} "
                         f"do not fit K = {p.k} members of width {p.width}; expected (G, B, K/G*W) or (B, K*W)")
    for name, t, dtype in (("losses", losses, torch.float32), ("hits", hits, torch.bool)):
        if t.dtype != dtype or t.device.type != "cpu" or t.dim() < 2 or t.shape[0] != p.k or t.shape[1] != b \
                or t.stride(1) != 1:
            raise ValueError(f"fused tail: {name} must be {dtype} (K, B, 1) slots with contiguous rows, K = {p.k}, "
                             f"B = {b}; got {t.dtype} of shape {tuple(t.shape)}, strides {t.stride()}")


def tail(p: Weights, first_matmul: torch.Tensor, yb: torch.Tensor, rate: float, losses: torch.Tensor,
         hits: torch.Tensor) -> torch.Tensor:
    """The step between the first layer's matmul and its update; returns the first layer's output gradient.

    ``first_matmul`` (G, B, m*W) or (B, K*W): the first layer's matmul output; ``yb`` (G, B) labels. Updates the
    second layer's weights and bias, the first layer's bias and, where scaled, the scale in place, and
    writes ``losses`` and ``hits`` ((K, B, 1) slots whose rows are contiguous), as ``stacks._tail``
    does. The gradient has ``first_matmul``'s shape, divided by the new scale where scaled.
    """
    lib = _library()[0]
    assert lib is not None, "prepare() returns Weights only where the library is loaded"
    _check_step(p, first_matmul, yb, losses, hits)
    g, b = yb.shape
    first_matmul, yb = first_matmul.contiguous(), yb.contiguous()
    gh = torch.empty_like(first_matmul)
    failed = lib.fused_tail(g, b, p.k // g, p.width, p.classes, first_matmul.data_ptr(), gh.data_ptr(), *p.pointers,
                            int(p.scaled), yb.data_ptr(), rate, losses.data_ptr(), losses.stride(0),
                            hits.data_ptr(), hits.stride(0))
    if failed == 2:
        bad = yb[(yb < 0) | (yb >= p.classes)][0].item()
        raise ValueError(f"fused tail: label {bad} is out of range, expected 0..{p.classes - 1} (one per class); "
                         "map the classes to 0..C-1")
    if failed:
        raise MemoryError("fused tail: could not allocate its scratch memory")
    return gh


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """The compiled tail, loaded, or None and the reason; compiled once per machine, cached on disk."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None, "no C compiler found (set CC or install gcc)"
    source = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"the C compiler {cc} did not run: {e}"
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(FLAGS).encode(), _cpu().encode()])).hexdigest()
    folder = _cache_folder()
    path = folder / f"fused_tail-{key[:16]}.so"
    if not path.exists():
        error = _compile(cc, folder, path)
        if error:
            return None, error
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        return None, f"could not load {path}: {e}"
    lib.fused_tail.argtypes = _ARGTYPES
    lib.fused_tail.restype = ctypes.c_int
    return lib, None


def _compile(cc: str, folder: Path, path: Path) -> str | None:
    """Compile the tail to ``path`` (via a temporary file, so concurrent workers never load half a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
    except OSError as e:
        return f"cannot write the compiled tail to {folder}: {e} (set SWEEP_CACHE_DIR)"
    try:
        for flags in ((NATIVE, *FLAGS), FLAGS):
            done = subprocess.run([cc, *flags, str(SOURCE), "-o", tmp, "-lm"], capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                os.replace(tmp, path)
                return None
        return f"{cc} could not compile {SOURCE.name} (exit code {done.returncode}): {done.stderr.strip()[:300]}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"{cc} could not compile {SOURCE.name}: {e}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cache_folder() -> Path:
    """``$SWEEP_CACHE_DIR``, else ``$XDG_CACHE_HOME/lambda-sweep``, else ``~/.cache/lambda-sweep``."""
    if os.environ.get("SWEEP_CACHE_DIR"):
        return Path(os.environ["SWEEP_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lambda-sweep"


def _cpu() -> str:
    """What the compiled code depends on besides its source: the machine and its CPU's instruction sets."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.system()} {platform.machine()} {platform.processor()} {flags.strip()}"
