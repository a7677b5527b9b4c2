"""The one place that turns ``device="auto"|"cuda"|"cpu"`` into ONNX Runtime providers.

onnxruntime-gpu lists the CUDA provider even on machines without a GPU and only fails
(noisily) when a session is created, so "available providers" proves nothing. We decide
from a real probe: a one-node model run on CUDA, checking which provider actually ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from handmocap.errors import BUILD_MODELS, HandmocapError

from .threads import core_share, map_beside, resolve_threads, side_pool

DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu")
R = TypeVar("R")


@dataclass(frozen=True)
class Backend:
    """The decision: ``device`` that runs, the providers to pass, and why."""

    device: str
    providers: tuple[str, ...]
    reason: str

    def describe(self) -> str:
        return f"{self.device} ({self.providers[0]}): {self.reason}"


@contextlib.contextmanager
def _quiet_ort():
    import onnxruntime as ort

    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)


@contextlib.contextmanager
def _quiet_fds():
    """Silence C-level stdout/stderr: ORT's library loader prints straight to them."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _probe_model() -> bytes:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.cache
def probe_cuda() -> tuple[bool, str]:
    """(works, reason): whether an ONNX Runtime session really runs on CUDA here."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 not found)"
    with _quiet_ort(), _quiet_fds():
        if hasattr(ort, "preload_dlls"):  # loads CUDA/cuDNN libraries shipped by pip wheels
            with contextlib.suppress(Exception):
                ort.preload_dlls()
        try:
            sess = ort.InferenceSession(
                _probe_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
            out = sess.run(None, {"x": np.array([-1, 0, 1, 2], np.float32)})[0]
        except Exception as err:  # ORT raises plain RuntimeError/Fail subclasses
            return False, f"CUDA session failed: {str(err).splitlines()[0][:200]}"
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        return False, "no usable GPU (the CUDA provider fell back to CPU)"
    if not np.array_equal(out, [0, 0, 1, 2]):
        return False, "the CUDA provider ran but returned wrong numbers"
    return True, "probe ran on CUDA"


def choose_backend(device: str = "auto") -> Backend:
    """Decide the providers. ``cuda`` that does not work is an error; ``auto`` falls back."""
    if device not in DEVICES:
        raise HandmocapError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    cpu = ("CPUExecutionProvider",)
    if device == "cpu":
        return Backend("cpu", cpu, "CPU asked for")
    works, reason = probe_cuda()
    if works:
        return Backend("cuda", ("CUDAExecutionProvider", *cpu), reason)
    if device == "cuda":
        raise HandmocapError(
            f"--device cuda was asked for but CUDA does not work here ({reason}); "
            "use --device auto or --device cpu"
        )
    return Backend("cpu", cpu, f"no GPU: {reason}")


def create_session(model: Path, backend: Backend, threads: int = 0):
    """An ONNX Runtime session for ``model`` on ``backend`` whose calls use ``threads``
    threads (0 = every usable core), waiting without spinning (:mod:`.threads`)."""
    import onnxruntime as ort

    if not Path(model).is_file():
        raise HandmocapError(f"model file {model} is missing: {BUILD_MODELS}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.intra_op_num_threads = resolve_threads(threads)
    opts.inter_op_num_threads = 1
    # Spinning threads burn the cores the video decoder and other programs need: measured
    # 40% slower captures beside the decoder (docs/architecture.md, "Speed and threads").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    try:
        with _quiet_ort():
            sess = ort.InferenceSession(str(model), opts, providers=list(backend.providers))
    except Exception as err:
        raise HandmocapError(f"cannot load the model {model}: {err}; rebuild it: "
                             f"{BUILD_MODELS}") from err  # fmt: skip
    if sess.get_providers()[0] != backend.providers[0]:
        raise HandmocapError(f"{model.name} did not start on {backend.providers[0]}")
    return sess


class Network:
    """One ONNX network on ``backend``, run alone or beside other work.

    On the CPU with more than one thread it holds two sessions: ``session`` on all
    ``threads`` for a call that runs alone, and a one-thread session for calls that run
    side by side (several crops split across the cores, or beside another network); see
    :mod:`.threads`. On a GPU there is one session and rows go through as one batch.
    """

    def __init__(self, model: Path, backend: Backend, threads: int = 0):
        self.backend = backend
        self.threads = resolve_threads(threads)
        self.session = create_session(model, backend, self.threads)
        split = backend.device == "cpu" and self.threads > 1
        self._narrow = create_session(model, backend, 1) if split else None
        self.pool = side_pool(self.threads) if split else None

    def run(self, name: str, x: np.ndarray, alone: bool = True) -> list[np.ndarray]:
        """The network's outputs for the (N, ...) batch ``x`` fed as input ``name``, rows in
        order. ``alone``: nothing else runs meanwhile, so N > 1 rows are split across the
        cores, one thread each, and one row uses them all (one thread while other programs
        keep the cores busy, :class:`.threads.CoreShare`); else the whole batch runs on one
        thread."""
        if self._narrow is None:
            return self.session.run(None, {name: x})
        if not alone:
            return self._narrow.run(None, {name: x})
        parts = self.side_by_side(len(x))
        if not parts:
            # All cores for one row, unless other programs keep them busy: then its threads
            # would wait at every operation for the one the scheduler put aside.
            wide = not core_share().contended()
            return (self.session if wide else self._narrow).run(None, {name: x})
        outs = self.map_beside(lambda rows: self._narrow.run(None, {name: x[rows]}), parts)
        return [np.concatenate(o) for o in zip(*outs, strict=True)]

    def side_by_side(self, rows: int) -> list[slice]:
        """The parts a call of ``rows`` rows that runs alone is split into, one thread each
        (consecutive rows, as even as they go); [] when it runs as one call: on a GPU, on
        one thread, or for one row. Slices, not index arrays: a part of a batch is then a
        view, where indexing copied every 224x224 crop (0.6 MB) once more."""
        if self._narrow is None or rows < 2:
            return []
        split = np.array_split(np.arange(rows), min(self.threads, rows))
        return [slice(part[0], part[-1] + 1) for part in split]

    def map_beside(self, fn: Callable[[slice], R], parts: list[slice]) -> list[R]:
        """``[fn(part) for part in parts]``, the parts side by side on this network's pool
        (:func:`.threads.map_beside`); ``fn`` runs the network with ``alone=False``."""
        return map_beside(self.pool, fn, parts)
