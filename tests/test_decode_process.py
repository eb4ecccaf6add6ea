"""The decoding process (io/decode_process.py) on the CPU: a child process with fake decoder
sessions writing into a shared-memory ring, read back in order, its errors and its end. NVDEC
itself runs the same code with a ring on the GPU (tests/test_gpu.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.io.decode_process import SLOTS_PER_SESSION, DecodeProcess, Stretch, StretchFailed, wait_closed
from decode_fakes import FakeSession

SHAPE, BATCH = (3, 4), 4


def start(tmp_path, stretches, sessions=3, **spec) -> DecodeProcess:
    path = tmp_path / "clip.json"
    path.write_text(json.dumps({"shape": SHAPE, "batch": BATCH, **spec}))
    return DecodeProcess("clip.json", FakeSession, str(path), stretches, sessions, SHAPE, BATCH, torch.device("cpu"))


def read_all(process: DecodeProcess, stop: threading.Event | None = None) -> list[int]:
    """Every frame's number, in the order the parent reads them, giving each slot back."""
    stop = stop or threading.Event()
    process.wait_ready(stop)
    numbers = []
    for j in range(len(process.stretches)):
        for slot, frames in process.batches(j, stop):
            assert frames.shape[1:] == SHAPE
            numbers += [int(f[0, 0]) for f in frames]
            assert all(torch.equal(f, torch.full(SHAPE, f[0, 0].item(), dtype=torch.uint8)) for f in frames)
            process.release(j, slot)
    return numbers


def test_stretches_from_several_sessions_come_back_in_file_order(tmp_path):
    """10 stretches on 3 sessions at uneven speeds, more batches per session than it has slots
    (so slots must be given back and reused): every frame once, in order, from a shared ring."""
    stretches = [Stretch(s, s + 20) for s in range(0, 200, 20)]
    process = start(tmp_path, stretches, frames=200, jitter_s=0.01)
    try:
        assert process.sessions == 3 and process.ring.shape == (3, SLOTS_PER_SESSION, BATCH, *SHAPE)
        assert 20 // BATCH > SLOTS_PER_SESSION - 1
        assert read_all(process) == [n % 256 for n in range(200)]
    finally:
        process.close(wait=True)
    assert not process._process.is_alive() and process.ring is None


def test_a_short_file_ends_a_stretch_early_and_read_on_reaches_the_real_end(tmp_path):
    process = start(tmp_path, [Stretch(0, 12), Stretch(12, 30, read_on=True)], sessions=2, frames=37)
    try:
        assert read_all(process) == list(range(37))
    finally:
        process.close()
    process = start(tmp_path, [Stretch(0, 12), Stretch(12, 30)], sessions=2, frames=20)
    try:
        assert read_all(process) == list(range(20))  # the second stretch delivers 8 of its 18
    finally:
        process.close()


def test_a_decoding_failure_ends_its_stretch_after_the_frames_before_it_and_the_session_goes_on(tmp_path):
    """The decoder fails in stretch 1 (at the batch holding frame 26): that stretch ends with a
    one-line StretchFailed at frame 24, after frames 16-23, and its session still decodes its
    next stretch (3); the other session's stretches are untouched."""
    stretches = [Stretch(0, 16), Stretch(16, 40), Stretch(40, 56), Stretch(56, 72)]
    process = start(tmp_path, stretches, sessions=2, frames=72, fail_at=26)
    got: list[int] = []
    failed = []
    try:
        process.wait_ready()
        stop = threading.Event()
        for j in range(len(stretches)):
            try:
                for slot, frames in process.batches(j, stop):
                    got += [int(f[0, 0]) for f in frames]
                    process.release(j, slot)
            except StretchFailed as exc:
                failed.append((j, exc.position, str(exc)))
    finally:
        process.close()
    assert got == list(range(24)) + list(range(40, 72))
    assert failed == [(1, 24, "clip.json: decoding failed at frame 24 (RuntimeError: corrupt packet)")]


def test_a_session_that_cannot_open_fails_the_start_naming_the_input(tmp_path):
    process = start(tmp_path, [Stretch(0, 8)], sessions=1, frames=8, open_error="no such codec")
    try:
        with pytest.raises(AlphaPoseTrtError, match=r"^clip.json: cannot open the decoder \(RuntimeError: no such codec\)$"):
            process.wait_ready()
    finally:
        process.close()


def test_a_crashed_decoding_process_is_reported_not_waited_for(tmp_path):
    process = start(tmp_path, [Stretch(0, 16), Stretch(16, 32)], sessions=2, frames=32, crash_at=20)
    try:
        with pytest.raises(AlphaPoseTrtError, match=r"^clip.json: the decoding process stopped unexpectedly \(exit code 3\)$"):
            read_all(process)
    finally:
        process.close()


def test_closing_early_stops_the_process_quickly(tmp_path):
    """A consumer that stops after one batch (sessions blocked on full rings) ends the child;
    closing returns at once (the child's exit is left to a background thread), and `wait_closed`
    returns once the child has ended and its ring is freed."""
    process = start(tmp_path, [Stretch(s, s + 40) for s in range(0, 400, 40)], frames=400)
    process.wait_ready()
    stop = threading.Event()
    slot, frames = next(process.batches(0, stop))
    assert int(frames[0, 0, 0]) == 0
    time.sleep(0.2)  # the other sessions fill their slots and wait
    begin = time.perf_counter()
    process.close()
    assert time.perf_counter() - begin < 0.5
    wait_closed()
    assert not process._process.is_alive() and process.ring is None and time.perf_counter() - begin < 5
