"""A bulk job that several load processes run at once, counted over one window they share.

Summing each process's own rate over its own window overstates the total: processes start at
different times (each spawn imports its client), and one that runs while others have not started
yet has the server to itself. Here every process warms up first, all start at one barrier, and
each counts only the work that finishes before the window's end, which the parent sets once.

A target runs in each process as `target(*args, start, window, queue)`: it warms up, waits on
`start` (a barrier of every process and the parent), works while `time.monotonic() <
window.value`, counts what finished by then, and puts that count on `queue`.
"""

from __future__ import annotations

import multiprocessing as mp
import time


class BulkJob:
    def __init__(self, target, args: tuple, processes: int):
        context = mp.get_context("spawn")
        self.queue, self.start = context.Queue(), context.Barrier(processes + 1)
        self.window = context.Value("d", float("inf"))
        self.seconds = 0.0
        full = (*args, self.start, self.window, self.queue)
        self.procs = [context.Process(target=target, args=full) for _ in range(processes)]
        for p in self.procs:
            p.start()
        self.start.wait(timeout=300)  # every process is warm and its work is going

    def begin(self, seconds: float) -> None:
        """Close the window `seconds` from now."""
        self.seconds = seconds
        self.window.value = time.monotonic() + seconds

    def rate(self) -> float:
        """What the processes counted, per second of the window (waits for it to close)."""
        done = sum(self.queue.get(timeout=self.seconds + 300) for _ in self.procs)
        for p in self.procs:
            p.join()
        return done / self.seconds
