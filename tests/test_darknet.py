"""Darknet cfg parser, network, YOLO decode, weight files and ONNX export of the detector."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.models.darknet import (
    Darknet,
    DarknetHeader,
    MaxPool,
    Route,
    _yolov3_spp_layers,
    build_yolov3_spp,
    darknet_weights_size,
    load_darknet_weights,
    parse_cfg,
    save_darknet_weights,
    yolov3_spp_cfg,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "darknet"
SIZE = 64  # smallest input every reference cfg accepts: forward passes stay cheap
HEAD_STRIDES = {
    "yolov3-spp": [32, 16, 8],
    "yolov3": [32, 16, 8],
    "yolov3-tiny": [32, 16],
    "yolov4-tiny": [32, 16],
}
# Byte sizes of the weight files published for these cfgs (pjreddie / AlexeyAB releases).
PUBLISHED_WEIGHT_BYTES = {"yolov3": 248_007_048, "yolov3-tiny": 35_434_956, "yolov4-tiny": 24_251_276}


def _slim(cfg: list[dict], factor: int = 16) -> list[dict]:
    """Same topology with 1/factor of the hidden filters: exercises every layer kind cheaply."""
    return [
        dict(d, filters=d["filters"] // factor)
        if d["type"] == "convolutional" and d["activation"] != "linear" else d
        for d in cfg
    ]


def _randomize(model: Darknet, seed: int) -> Darknet:
    """Random weights *and* BN statistics, so that every stored float influences the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.conv_blocks():
            for t in block.darknet_tensors():
                t.copy_(torch.randn(t.shape, generator=gen) * 0.1)
            if block.bn is not None:
                block.bn.running_var.copy_(torch.rand(block.bn.running_var.shape, generator=gen) + 0.5)
                block.bn.weight.add_(1.0)
    return model


@pytest.fixture(scope="module")
def slim_spp() -> Darknet:
    return _randomize(Darknet(_slim(yolov3_spp_cfg()), img_size=SIZE), seed=0)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------
# cfg parsing and the network
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HEAD_STRIDES))
def test_reference_cfg_builds_and_runs(name: str, image: torch.Tensor) -> None:
    cfg = parse_cfg(REFERENCE / f"{name}.cfg")
    model = Darknet(cfg, img_size=SIZE)
    assert model.strides == HEAD_STRIDES[name]
    assert model.num_classes == 80
    assert len(model.module_list) == len(cfg) - 1
    heads = [d for d in cfg if d["type"] == "yolo"]
    expected_rows = sum(len(d["mask"]) * (SIZE // s) ** 2 for d, s in zip(heads, HEAD_STRIDES[name]))
    with torch.inference_mode():
        out = model(image)
    assert out.shape == (2, expected_rows, 85)
    assert torch.isfinite(out).all()
    assert (out[..., 2:4] > 0).all() and (out[..., 4:] >= 0).all() and (out[..., 4:] <= 1).all()
    if name in PUBLISHED_WEIGHT_BYTES:
        assert darknet_weights_size(model) == PUBLISHED_WEIGHT_BYTES[name]


def test_default_size_comes_from_net_section() -> None:
    model = Darknet(REFERENCE / "yolov4-tiny.cfg")
    assert model.img_size == 416
    assert model.yolo_layers[0].grid_hw == (13, 13)


def test_builtin_yolov3_spp_equals_reference_cfg() -> None:
    reference = parse_cfg(REFERENCE / "yolov3-spp.cfg")
    builtin = yolov3_spp_cfg()
    assert len(builtin) == len(reference) == 115
    for index, (ours, theirs) in enumerate(zip(builtin, reference)):
        assert ours == theirs, f"layer {index - 1}"
    model = build_yolov3_spp(img_size=SIZE)
    assert model.img_size == SIZE and model.strides == [32, 16, 8]
    assert darknet_weights_size(model) == 252_209_544


def test_parse_canonicalises_darknet_defaults() -> None:
    text = "[net]\nwidth=64\nheight=64\n[convolutional]\nfilters=8\nsize=3\npad=1\n" \
           "[convolutional]\nfilters=8\nsize=1\npadding=2\n[route]\nlayers=-1,0\n"
    net, conv_a, conv_b, route = parse_cfg(text)
    assert net == {"type": "net", "width": 64, "height": 64, "channels": 3}
    assert conv_a["padding"] == 1 and conv_a["activation"] == "logistic" and not conv_a["batch_normalize"]
    assert conv_b["padding"] == 2 and conv_b["stride"] == 1 and conv_b["groups"] == 1
    assert route["layers"] == [1, 0]


_NET = "[net]\nwidth=64\nheight=64\nchannels=3\n"


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("[convolutional]\nfilters=8\nsize=3\nfoo=1\n", 8, "unknown key 'foo'"),
        ("[convolutional]\nfilters=8\n[region]\nclasses=2\n", 7, "unknown section [region]"),
        ("[convolutional]\nfilters=8\nactivation=elu\n", 7, "unsupported activation 'elu'"),
        ("[convolutional]\nfilters=8\ndilation=2\n", 7, "unsupported dilation=2"),
        ("[convolutional]\nfilters=eight\n", 6, "bad value 'eight'"),
        ("[convolutional]\nfilters=8\n[route]\nlayers=-3\n", 8, "does not name an earlier layer"),
        ("[convolutional]\nfilters=8\nsize=3\nsize=1\n", 8, "duplicate key 'size'"),
        ("[yolo]\nmask=0,5\nanchors=1,2,3,4\nnum=2\n", 6, "mask [0, 5]"),
        ("[upsample]\nstride=2\nscale=0.5\n", 7, "unsupported scale=0.5"),
        ("[maxpool]\nsize=2\nstride=1\npadding=5\n", 8, "padding 5 is outside 0..2"),
        ("[convolutional]\nfilters=8\nnot an option\n", 7, "expected 'key=value'"),
    ],
)
def test_bad_cfg_names_file_and_line(tmp_path: Path, body: str, line: int, words: str) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(_NET + body)
    with pytest.raises(AlphaPoseTrtError) as info:
        parse_cfg(path)
    message = str(info.value)
    assert f"{path}, line {line}:" in message and words in message and "\n" not in message


def test_training_only_keys_are_ignored() -> None:
    text = _NET + "momentum=0.9\nmosaic=1\n[convolutional]\nfilters=18\nsize=1\nactivation=linear\n" \
        "stopbackward=1\n[yolo]\nmask=0\nanchors=4,4,8,8\nnum=2\nclasses=1\njitter=.3\nignore_thresh=.7\n" \
        "iou_loss=ciou\nnms_kind=greedynms\nbeta_nms=0.6\nresize=1.5\nrandom=1\n"
    layers = parse_cfg(text)
    assert layers[2] == {"type": "yolo", "mask": [0], "anchors": [(4.0, 4.0), (8.0, 8.0)],
                         "classes": 1, "scale_x_y": 1.0}
    with pytest.raises(AlphaPoseTrtError, match=r"18 channels; 1 anchors x \(5 \+ 1 classes\) need 6"):
        Darknet(layers)


def test_missing_cfg_and_bad_sizes_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(AlphaPoseTrtError, match="nope.cfg: darknet cfg file not found"):
        parse_cfg(tmp_path / "nope.cfg")
    with pytest.raises(AlphaPoseTrtError, match="img_size 80"):
        Darknet(_slim(yolov3_spp_cfg()), img_size=80)  # not a multiple of 32
    model = Darknet(REFERENCE / "yolov4-tiny.cfg", img_size=SIZE)
    with pytest.raises(AlphaPoseTrtError, match=r"must be \[B, 3, 64, 64\], got \[1, 3, 96, 96\]"):
        model(torch.zeros(1, 3, 96, 96))


# ---------------------------------------------------------------------------------------------
# layers against straightforward darknet-semantics references
# ---------------------------------------------------------------------------------------------


def _darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """Darknet's forward_maxpool_layer, literally: left offset padding // 2, out-of-image ignored."""
    c, h, w = x.shape
    out_h, out_w = (h + padding - size) // stride + 1, (w + padding - size) // stride + 1
    out = np.full((c, out_h, out_w), -np.inf, dtype=x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            for n in range(size):
                for m in range(size):
                    y, xx = i * stride - padding // 2 + n, j * stride - padding // 2 + m
                    if 0 <= y < h and 0 <= xx < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, y, xx])
    return out


@pytest.mark.parametrize(
    ("size", "stride", "padding", "n"),
    [(2, 2, 1, 8), (2, 2, 1, 7), (2, 1, 1, 5), (5, 1, 4, 6), (9, 1, 8, 5), (13, 1, 12, 5),
     (9, 1, 8, 11), (13, 1, 12, 19), (3, 2, 2, 7), (3, 2, 1, 8), (3, 1, 1, 5)],
)
def test_maxpool_matches_darknet(size: int, stride: int, padding: int, n: int) -> None:
    x = torch.randn(1, 2, n, n, generator=torch.Generator().manual_seed(size * 10 + n))
    expected = _darknet_maxpool(x[0].numpy(), size, stride, padding)
    pool = MaxPool(size, stride, padding, out_hw=expected.shape[1:])
    torch.testing.assert_close(pool(x)[0], torch.from_numpy(expected), rtol=0, atol=0)
    # SPP's 9 and 13 run as chained 5x5 pools (exact, as the comparison above shows)
    assert isinstance(pool.pool, torch.nn.Sequential) == (size in (9, 13))


def test_route_groups_take_one_channel_chunk() -> None:
    x = torch.arange(8.0).reshape(1, 8, 1, 1)
    assert Route([0], groups=2, group_id=1)([x]).flatten().tolist() == [4.0, 5.0, 6.0, 7.0]
    assert Route([0, 1], groups=1, group_id=0)([x, x]).shape == (1, 16, 1, 1)


def _reference_decode(raw: torch.Tensor, spec: dict, img_size: int) -> torch.Tensor:
    """One row per (cell, anchor), computed element by element from darknet's formulas."""
    anchors = [spec["anchors"][m] for m in spec["mask"]]
    attrs, s = 5 + spec["classes"], spec["scale_x_y"]
    batch, _, h, w = raw.shape
    stride = img_size / w
    rows = torch.empty(batch, h * w * len(anchors), attrs)
    for b in range(batch):
        for gy in range(h):
            for gx in range(w):
                for a, (aw, ah) in enumerate(anchors):
                    t = raw[b, a * attrs : (a + 1) * attrs, gy, gx].double()
                    sig = torch.sigmoid(t)
                    row = (gy * w + gx) * len(anchors) + a
                    rows[b, row, 0] = (s * sig[0] - (s - 1) / 2 + gx) * stride
                    rows[b, row, 1] = (s * sig[1] - (s - 1) / 2 + gy) * stride
                    rows[b, row, 2] = math.exp(t[2]) * aw
                    rows[b, row, 3] = math.exp(t[3]) * ah
                    rows[b, row, 4:] = sig[4:]
    return rows


@pytest.mark.parametrize("which", ["slim-yolov3-spp", "yolov4-tiny"])
def test_decode_matches_per_anchor_reference(which: str, slim_spp: Darknet, image: torch.Tensor) -> None:
    if which == "yolov4-tiny":  # scale_x_y = 1.05 and grouped routes
        model = _randomize(Darknet(_slim(parse_cfg(REFERENCE / "yolov4-tiny.cfg"), 4), img_size=SIZE), seed=2)
    else:
        model = slim_spp
    raw_inputs: list[torch.Tensor] = []
    hooks = [
        head.register_forward_pre_hook(lambda _m, args: raw_inputs.append(args[0])) for head in model.yolo_layers
    ]
    try:
        with torch.no_grad():
            out = model(image)
    finally:
        for hook in hooks:
            hook.remove()
    specs = [d for d in model.cfg if d["type"] == "yolo"]
    if which == "yolov4-tiny":
        assert {d["scale_x_y"] for d in specs} == {1.05}
    expected = torch.cat([_reference_decode(r, d, SIZE) for r, d in zip(raw_inputs, specs)], dim=1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# weight files
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_weights(slim_spp: Darknet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "slim.weights"
    save_darknet_weights(slim_spp, path, seen=123_456)
    return path


def test_weights_round_trip(slim_spp: Darknet, saved_weights: Path, image: torch.Tensor) -> None:
    assert saved_weights.stat().st_size == darknet_weights_size(slim_spp)
    fresh = Darknet(_slim(yolov3_spp_cfg()), img_size=SIZE)
    with torch.no_grad():
        assert not torch.equal(fresh(image), slim_spp(image))
        header = load_darknet_weights(fresh, saved_weights)
        assert torch.equal(fresh(image), slim_spp(image))
    assert header == DarknetHeader(0, 2, 0, 123_456)


def test_weights_file_layout_is_darknets(slim_spp: Darknet, saved_weights: Path) -> None:
    data = saved_weights.read_bytes()
    assert struct.unpack_from("<3iq", data) == (0, 2, 0, 123_456)
    floats = np.frombuffer(data, dtype="<f4", offset=20)
    first = slim_spp.conv_blocks()[0]  # with BN: beta, gamma, mean, var, then OIHW weights
    n = first.conv.out_channels
    bn = first.bn
    expected = [bn.bias, bn.weight, bn.running_mean, bn.running_var, first.conv.weight]
    np.testing.assert_array_equal(floats[: 4 * n + first.conv.weight.numel()],
                                  torch.cat([t.detach().flatten() for t in expected]).numpy())
    blocks = slim_spp.conv_blocks()
    head_index = next(i for i, b in enumerate(blocks) if b.bn is None)  # without BN: bias, weights
    offset = sum(t.numel() for b in blocks[:head_index] for t in b.darknet_tensors())
    head = blocks[head_index]
    np.testing.assert_array_equal(floats[offset : offset + head.conv.out_channels],
                                  head.conv.bias.detach().numpy())


def test_old_header_with_int32_seen_loads(slim_spp: Darknet, saved_weights: Path, tmp_path: Path,
                                          image: torch.Tensor) -> None:
    old = tmp_path / "old.weights"
    old.write_bytes(struct.pack("<3ii", 0, 1, 0, 77) + saved_weights.read_bytes()[20:])
    fresh = Darknet(_slim(yolov3_spp_cfg()), img_size=SIZE)
    assert load_darknet_weights(fresh, old) == DarknetHeader(0, 1, 0, 77)
    with torch.no_grad():
        assert torch.equal(fresh(image), slim_spp(image))


@pytest.mark.parametrize(("change", "found"), [(-8, -2), (+4, +1)])
def test_wrong_float_count_says_expected_and_found(slim_spp: Darknet, saved_weights: Path, tmp_path: Path,
                                                   change: int, found: int) -> None:
    data = saved_weights.read_bytes()
    bad = tmp_path / "bad.weights"
    bad.write_bytes(data[:change] if change < 0 else data + bytes(change))
    expected = (len(data) - 20) // 4
    with pytest.raises(AlphaPoseTrtError) as info:
        load_darknet_weights(Darknet(_slim(yolov3_spp_cfg()), img_size=SIZE), bad)
    message = str(info.value)
    assert str(bad) in message
    assert f"expected {expected} float32" in message and f"found {expected + found}" in message


def test_missing_weights_file(tmp_path: Path, slim_spp: Darknet) -> None:
    with pytest.raises(AlphaPoseTrtError, match="none.weights: darknet weights file not found"):
        load_darknet_weights(slim_spp, tmp_path / "none.weights")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def test_onnx_export_has_no_scatternd_or_pad(tmp_path: Path) -> None:
    import onnx  # dev extra
    import onnxruntime as ort

    # YOLOv3-SPP's topology with one narrow residual block per stage: every layer kind of the real
    # network (SPP pools included) at a size the dynamo exporter handles in seconds.
    mini = _yolov3_spp_layers([(8, 1), (8, 1), (16, 1), (16, 1), (32, 1)])
    model = _randomize(Darknet(mini, img_size=SIZE), seed=3)
    path = tmp_path / "yolo.onnx"
    batch = torch.export.Dim("batch", min=1, max=8)
    torch.onnx.export(model, (torch.rand(2, 3, SIZE, SIZE),), str(path), dynamo=True, verbose=False,
                      input_names=["images"], output_names=["detections"], dynamic_shapes=({0: batch},))
    proto = onnx.load(str(path))
    ops = {n.op_type for n in proto.graph.node} | {n.op_type for f in proto.functions for n in f.node}
    assert "ScatterND" not in ops and "Pad" not in ops
    assert {"MaxPool", "Split", "Resize"} <= ops
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch_size in (1, 3):  # dynamic batch: neither is the export batch
        x = torch.rand(batch_size, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch_size))
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), model(x), rtol=1e-4, atol=1e-4)


def test_download_table_size_matches_architecture():
    """The size check of `download` is the exact byte count of the built-in YOLOv3-SPP."""
    from alphapose_trt.download import WEIGHTS

    assert WEIGHTS["yolov3-spp.weights"].size == darknet_weights_size(build_yolov3_spp(64))
