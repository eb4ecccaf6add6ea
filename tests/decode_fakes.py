"""Decoder sessions for tests/test_decode_process.py: imported by name in the decoding process,
so they live in a module of their own. Each reads its behaviour from the JSON file it is given
as the video path: every frame's pixels are its frame number (mod 256)."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Iterator

import torch


class FakeSession:
    def __init__(self, path: str, device: torch.device, stream: object):
        self.spec = json.loads(open(path).read())
        self.device = device
        if self.spec.get("open_error"):
            raise RuntimeError(self.spec["open_error"])

    def batches(self, start: int, end: int, read_on: bool) -> Iterator[list[torch.Tensor]]:
        spec, shape = self.spec, tuple(self.spec["shape"])
        stop = spec["frames"] if read_on else min(end, spec["frames"])
        rng = random.Random(start)  # sessions run at uneven speeds, so batches arrive out of order
        for first in range(start, stop, spec["batch"]):
            time.sleep(rng.uniform(0, spec.get("jitter_s", 0)))
            numbers = range(first, min(first + spec["batch"], stop))
            if spec.get("crash_at") in numbers:
                os._exit(3)
            if spec.get("fail_at") in numbers:
                raise RuntimeError("corrupt packet\nsecond line")
            yield [torch.full(shape, n % 256, dtype=torch.uint8, device=self.device) for n in numbers]
