"""Many small requests for model outputs, run as full batches.

Scoring one map asks the model about a handful of images at a time (two explanation
images, a few points of each insertion / deletion curve). Run one by one, those
requests leave most passes part-empty, and on a 2-core CPU a pass of one image costs
nearly as much as a pass of eight. The batcher queues every request's images, runs
them ``rows`` at a time whatever request they came from, and hands each request its
outputs once all of them are done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Done = Callable[[np.ndarray], None]


@dataclass
class _Request:
    done: Done
    outputs: list
    waiting: int


class Batcher:
    """Queue images for ``fn`` (``[B, ...] -> [B, ...]``), run in batches of ``rows``."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], rows: int):
        if rows < 1:
            raise ValueError(f"rows per pass must be at least 1, got {rows}")
        self.fn, self.rows = fn, rows
        self.queue: list[tuple[np.ndarray, _Request, int]] = []
        self.passes = 0

    def add(self, images: np.ndarray, done: Done) -> None:
        """Queue ``images``; ``done(outputs)`` is called once every one has run, with the
        outputs in the images' order (at once for an empty request)."""
        if len(images) == 0:
            done(np.empty((0,)))
            return
        request = _Request(done, [None] * len(images), len(images))
        self.queue += [(image, request, i) for i, image in enumerate(images)]
        while len(self.queue) >= self.rows:
            self._run(self.rows)

    def flush(self) -> None:
        """Run whatever is still queued (the last, partial batch)."""
        while self.queue:
            self._run(min(self.rows, len(self.queue)))

    def _run(self, n: int) -> None:
        chunk, self.queue = self.queue[:n], self.queue[n:]
        outputs = self.fn(np.stack([image for image, _, _ in chunk]))
        self.passes += 1
        for (_, request, i), row in zip(chunk, outputs, strict=True):
            request.outputs[i] = row
            request.waiting -= 1
            if request.waiting == 0:
                request.done(np.stack(request.outputs))
