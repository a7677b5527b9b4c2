"""How a capture shares the CPU cores: the one place that sizes threads (docs/architecture.md,
"Speed and threads").

The rule, measured on a 2-core machine: never make one network call (or one torch op) wait
for several threads to meet at a barrier when the cores are shared, and do not spin while
waiting. A network call runs on all the usable cores only when it runs alone; calls that can
run side by side (the crops of two hands, the palm detector beside the tracked hands'
landmarks, the fit of two tracks) run at the same time on one thread each, from a small pool.
Threads that do independent work keep their speed when another program takes cores, where
threads that meet at barriers wait for the slowest one: with ONNX Runtime's spinning threads
and torch's default thread count, the MANO fit slowed ~2x under a 2-process load and ONNX
Runtime's default settings cost 40% beside the video decoder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. a container's or Ray's
    share), at least 1."""
    return max(1, len(_usable_cpu_ids()))


def resolve_threads(threads: int) -> int:
    """``threads`` as asked (0 = every usable core), at least 1."""
    return max(1, threads) if threads > 0 else usable_cores()


class SidePool:
    """Threads that work beside the calling thread: ``workers`` of them, shared by the
    process for each size (the calling thread is one more)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handmocap")

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        return self.executor.submit(fn)


@functools.cache
def side_pool_of(workers: int) -> SidePool:
    return SidePool(workers)


def side_pool(threads: int) -> SidePool | None:
    """The pool for ``threads`` threads in all: ``threads - 1`` beside the caller; None for
    one thread."""
    return side_pool_of(threads - 1) if threads > 1 else None


def beside(pool: SidePool | None, fn: Callable[[], R]) -> Future[R]:
    """Start ``fn()`` on ``pool`` (or run it now when there is none) and return its future."""
    if pool is not None:
        return pool.submit(fn)
    done: Future[R] = Future()
    try:
        done.set_result(fn())
    except BaseException as err:  # handed to the caller by .result(), as the pool would
        done.set_exception(err)
    return done


def map_beside(pool: SidePool | None, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]`` on the calling thread and the pool's workers at the same
    time, each taking the next item when it is free (in order on the calling thread alone
    when there is no pool). Results in item order; the first error is raised once every
    started call has finished."""
    if pool is None or len(items) < 2:
        return [fn(x) for x in items]
    results: list = [None] * len(items)
    todo = iter(range(len(items)))
    lock = threading.Lock()
    failed = threading.Event()  # after an error no new item starts

    def work() -> None:
        while not failed.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException:
                failed.set()
                raise

    helpers = [pool.submit(work) for _ in range(min(pool.workers, len(items) - 1))]
    try:
        work()
    finally:
        for f in helpers:  # wait for all: none may outlive this call
            f.exception()
    for f in helpers:
        f.result()
    return results


# --- other programs on our cores ----------------------------------------------------------------
# A call on every core meets its threads at a barrier after each operation; when another
# program keeps the cores busy, one of them is often descheduled and the rest wait for it.
# So a call that would run alone on all cores runs on one thread while other programs leave
# fewer than CONTENDED_FREE_CORES cores free. Independent work side by side (two hands'
# crops, the palm detector, the fit of two tracks) goes on: it meets once a frame, not once
# an operation, and keeps the capture its share of the cores (docs/architecture.md, "Speed
# and threads", has the measurements).
CONTENDED_FREE_CORES = 1.5
SHARE_INTERVAL_S = 0.5  # how often /proc/stat is read again (two small files)


def _busy_ticks(cpus: set[int], text: str) -> int:
    """Clock ticks the CPUs ``cpus`` spent busy (anything but idle and iowait, stolen time
    included: another virtual machine had the core) in ``/proc/stat``'s ``text``."""
    busy = 0
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy


class CoreShare:
    """How many of this process's cores other programs keep busy, re-read from ``/proc/stat``
    at most every ``interval_s`` seconds: the busy time of the usable CPUs less this
    process's own CPU time, over the wall time between two reads. Where ``/proc/stat`` is
    missing (not Linux) other programs count as idle."""

    def __init__(self, interval_s: float = SHARE_INTERVAL_S, stat_path: str = "/proc/stat"):
        self.interval_s = interval_s
        self.stat_path = stat_path
        self.cpus = _usable_cpu_ids()
        self.cores = usable_cores()
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._lock = threading.Lock()
        self._last = self._sample()
        self._others = 0.0

    def _sample(self) -> tuple[float, float, int] | None:
        try:
            with open(self.stat_path) as f:
                text = f.read()
        except OSError:
            return None
        t = os.times()
        return time.monotonic(), t.user + t.system, _busy_ticks(self.cpus, text)

    def others(self) -> float:
        """Cores kept busy by other programs over the last interval (0 .. cores)."""
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] < self.interval_s:
                return self._others
            now = self._sample()
            if now is None:
                return self._others
            (t0, own0, busy0), (t1, own1, busy1) = self._last, now
            others = ((busy1 - busy0) / self.tick - (own1 - own0)) / max(t1 - t0, 1e-6)
            self._others = min(max(others, 0.0), float(self.cores))
            self._last = now
            return self._others

    def contended(self) -> bool:
        """Fewer than CONTENDED_FREE_CORES cores are left free by other programs."""
        return self.cores - self.others() < CONTENDED_FREE_CORES


def _usable_cpu_ids() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


@functools.cache
def core_share() -> CoreShare:
    """The process's one :class:`CoreShare`, shared by every network."""
    return CoreShare()


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """Run the block with OpenCV's threads set to ``n`` (process-wide), then restore them.
    The tracking loop's image operations are small (a 224x224 crop, a colour conversion):
    split over the cores beside the networks and the decoder they waited for each other
    (office clip, tracking only, medians of 3: 5.62 s with OpenCV's 2 threads, 5.39 s
    with 1)."""
    import cv2

    with _set_for_block(cv2.getNumThreads, cv2.setNumThreads, n):
        yield


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with the BLAS library's threads (numpy's and scipy's OpenBLAS) set to
    ``n`` (process-wide), then restore them. OpenBLAS's threads spin while they wait for
    work: beside a fit on one core they burnt the other, doubling the fit's CPU time for
    no gain in wall time (docs/architecture.md, "Speed and threads")."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def _set_for_block(get: Callable[[], int], put: Callable[[int], None], n: int) -> Iterator[None]:
    before = get()
    put(n)
    try:
        yield
    finally:
        put(before)


__all__ = [
    "CoreShare", "SidePool", "beside", "blas_threads", "core_share", "map_beside",
    "opencv_threads", "resolve_threads", "side_pool", "usable_cores",
]  # fmt: skip
