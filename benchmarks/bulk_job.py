"""A bulk job that several load processes run at once, counted over one window they share.

Summing each process's own rate over its own window overstates the total: processes start at
different times (each spawn imports its client), and one that runs while others have not started
yet has the server to itself. Here every process warms up first, all start at one barrier and
keep the server saturated from then on, and each counts only the work that finishes inside one
window, which the parent sets once: completions per second of a saturated closed loop.

A target runs in each process as `target(*args, start, window, queue)`: it runs its loops with
`run_loops`, which warms them up, waits on `start` (a barrier of every process and the parent),
works until the window closes, counting the work inside it, and puts that count on `queue`.
`window` is (opens, closes) in `time.monotonic()` seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Callable

# what a loop's opener returns: step() does one unit of work and returns what it finished (images,
# texts); close() ends the loop
Loop = tuple[Callable[[], int], Callable[[], None]]


def run_loops(count: int, open_loop: Callable[[int], Loop], start, window) -> int:
    """`count` closed loops in threads of one BulkJob process: loop k is `open_loop(k)` (which warms
    up before it returns); once every loop is warm and `start` opens, each repeats its step until
    `window` closes. Returns what the steps that ended inside the window finished."""
    counts = [0] * count
    warm, go = threading.Barrier(count + 1), threading.Barrier(count + 1)

    def loop(k: int) -> None:
        step, close = open_loop(k)
        warm.wait()
        go.wait()
        while time.monotonic() < window[1]:
            done = step()
            if window[0] <= time.monotonic() <= window[1]:
                counts[k] += done
        close()

    threads = [threading.Thread(target=loop, args=(k,)) for k in range(count)]
    for t in threads:
        t.start()
    warm.wait()
    start.wait()
    go.wait()
    for t in threads:
        t.join()
    return sum(counts)


class BulkJob:
    def __init__(self, target, args: tuple, processes: int):
        context = mp.get_context("spawn")
        self.queue, self.start = context.Queue(), context.Barrier(processes + 1)
        self.window = context.Array("d", [0.0, float("inf")])
        self.seconds = 0.0
        full = (*args, self.start, self.window, self.queue)
        self.procs = [context.Process(target=target, args=full) for _ in range(processes)]
        for p in self.procs:
            p.start()
        self.start.wait(timeout=300)  # every process is warm and its work is going

    def begin(self, seconds: float, after: float = 0.0) -> None:
        """Open the window `after` seconds from now, for `seconds`."""
        opens = time.monotonic() + after
        self.seconds = seconds
        self.window[0], self.window[1] = opens, opens + seconds

    def rate(self) -> float:
        """What the processes counted, per second of the window (waits for it to close)."""
        wait = max(0.0, self.window[1] - time.monotonic()) + 300
        done = sum(self.queue.get(timeout=wait) for _ in self.procs)
        for p in self.procs:
            p.join()
        return done / self.seconds
