"""The detector cut at its heads (engines/branches.py) computes what the whole forward computes.

On the CPU the ranges run one after the other, through the same plan and joins as on two CUDA
streams; each range runs eagerly here (a compiled range takes ~40 s to build on the CI machine's
CPU). The compiled engine with the side stream is checked against eager fp32 in test_gpu.py.
"""

from __future__ import annotations

import pytest
import torch

from alphapose_trt.engines.branches import BranchedDarknet, layer_ranges
from alphapose_trt.models.darknet import Darknet, Route, Shortcut, YoloLayer, parse_cfg
from test_darknet import HEAD_STRIDES, REFERENCE, SIZE, _randomize, _slim


@pytest.fixture(scope="module", params=sorted(HEAD_STRIDES))
def model(request) -> Darknet:
    return _randomize(Darknet(_slim(parse_cfg(REFERENCE / f"{request.param}.cfg")), img_size=SIZE), seed=3)


def _read_by_later_layers(model: Darknet) -> set[int]:
    reads = set()
    for m in model.module_list:
        if isinstance(m, Route):
            reads.update(m.layers)
        elif isinstance(m, Shortcut):
            reads.add(m.source)
    return reads


def test_every_head_but_the_last_is_a_branch_nothing_else_reads(model: Darknet) -> None:
    branches = model.head_branches()
    heads = [i for i, m in enumerate(model.module_list) if isinstance(m, YoloLayer)]
    assert [last for _, last in branches] == heads[:-1]  # the last head ends the network
    read = _read_by_later_layers(model)
    for first, last in branches:
        assert first - 1 in read  # its input stays alive for the layers after it
        assert not read & set(range(first, last + 1))
        assert isinstance(model.module_list[last + 1], Route)
        assert not any(isinstance(m, (Route, Shortcut)) for m in model.module_list[first : last + 1])
        assert first < last  # at least one convolution before the decode


def test_ranges_cover_the_network_once_in_order(model: Darknet) -> None:
    ranges = layer_ranges(model)
    assert ranges[0][0].start == 0 and ranges[-1][0].stop == len(model.module_list)
    for (a, _), (b, _) in zip(ranges, ranges[1:]):
        assert a.stop == b.start
    assert [(r.start, r.stop - 1) for r, branch in ranges if branch] == model.head_branches()
    given = set()
    for r, branch in ranges:
        assert set(r.reads) <= given  # every earlier output a range reads, an earlier range gave
        assert not (branch and (r.gives or r.returns_x))  # nothing reads a branch
        given |= set(r.gives)


def test_ranges_reproduce_the_forward(model: Darknet) -> None:
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    calls = []

    def run(r):  # eager in place of torch.compile, recording which ranges ran
        def fn(*args):
            calls.append(r.start)
            return r(*args)
        return fn

    branched = BranchedDarknet(model, run)
    with torch.inference_mode():
        want, got = model(x), branched(x)
    assert calls == [r.start for r, _ in layer_ranges(model)]
    assert branched.branches == len(model.head_branches()) >= 1
    assert torch.equal(got, want)
