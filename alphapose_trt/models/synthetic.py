"""Realistic random weights, written in the real file formats, for tests and benchmarks.

The real `yolov3-spp.weights` and `fast_res50_256x192.pth` cannot be downloaded everywhere (CI,
the benchmark machines). Plain random initialisation is a poor stand-in: activations drift by
orders of magnitude through 50-100 layers, fp16 overflows, and the detector finds either nothing
or 20 000 boxes, so the pipeline after it is not exercised realistically. Here every batch norm is
calibrated on random images so activations stay O(1), and the output convs are rescaled so the
detector yields a plausible number of person boxes and pose heatmaps peak around 0.5-1.
The files go through the same writers and readers as real weights, so the loaders are tested too.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from alphapose_trt.fileio import atomic_write
from alphapose_trt.models.darknet import (
    DEFAULT_IMG_SIZE,
    Darknet,
    Shortcut,
    YoloLayer,
    build_yolov3_spp,
    save_darknet_weights,
)
from alphapose_trt.models.fastpose import Bottleneck, FastPose, PoseModelSpec

FASTPOSE_FILENAME = "fast_res50_256x192.pth"
YOLOV3_SPP_FILENAME = "yolov3-spp.weights"

# Batch norm affine parameters are drawn around identity: gamma ~ 1 + N(0, s), beta ~ N(0, s).
BN_GAMMA_STD = 0.1
BN_BETA_STD = 0.1
# A residual branch's last BN gamma is scaled down so sums over 16 blocks stay O(1)
# (trained ResNets end up with small final gammas for the same reason).
RESIDUAL_GAMMA_SCALE = 0.5
# The detector's 23 residual blocks get a smaller one: with 0.5, random Darknet-53 features are
# chaotic (an fp16 rounding moved objectness by 0.13 on an H100), with 0.2 rounding errors stay at
# fp16's own level, as they do in a trained network.
DETECTOR_RESIDUAL_GAMMA_SCALE = 0.2
# Calibration inputs. FastPose: 2 crops at its own input size. The detector: one image at the
# size it is used at. Deep random features drift with the input size (the stride-32 maps and the
# 13x13 SPP pool see mostly padding on small inputs), and a detector calibrated at 160 px gives
# head logits 10x too large at 608 px, while one calibrated at 608 stays O(1) at 320 too.
POSE_CALIBRATION_IMAGES = 2
DETECTOR_CALIBRATION_IMAGES = 1
DETECTOR_CALIBRATION_SIZE = DEFAULT_IMG_SIZE
# Pose heatmaps: standard deviation of the random heatmaps (peaks land around 3-4 of these).
HEATMAP_STD = 0.25
# Detector heads: score logits get spread 1; box logits a smaller one, as in trained YOLOs, which
# keeps exp(w, h) * anchor far below fp16's 65504. Objectness is shifted so that a few dozen
# anchors pass AlphaPose's 0.1 objectness threshold at 608 px, and the person class is favoured
# so that most of those are people: the pipeline then crops a crowd-sized batch per image.
SCORE_LOGIT_STD = 1.0
BOX_LOGIT_STD = 0.3
OBJECTNESS_BIAS = -5.6
PERSON_LOGIT_BIAS = 4.0
BOX_ATTRIBUTES = 5  # x, y, w, h, objectness: the class scores follow


def random_images(generator: torch.Generator, count: int, height: int, width: int) -> torch.Tensor:
    """RGB images in [0, 1] with smooth structure plus fine noise, shaped (count, 3, H, W).

    Smooth blobs rather than white noise, so that deep layers with large receptive fields see
    spatially varying inputs, as they do on photographs.
    """
    coarse = torch.rand(count, 3, max(1, height // 16), max(1, width // 16), generator=generator)
    smooth = nn.functional.interpolate(
        coarse, size=(height, width), mode="bilinear", align_corners=False
    )
    fine = torch.rand(count, 3, height, width, generator=generator)
    return (0.85 * smooth + 0.15 * fine).clamp_(0.0, 1.0)


@torch.no_grad()
def randomize_weights(model: nn.Module, generator: torch.Generator) -> None:
    """He-normal conv/linear weights, zero biases, BN affine near identity; from `generator` only.

    Why not PyTorch's default init: determinism for a seed must not depend on the global RNG
    state, and He scaling keeps the layers without BN (SE gates, heads) at O(1) gain.
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(
                torch.randn(module.weight.shape, generator=generator) * math.sqrt(2.0 / fan_in)
            )
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            shape = module.weight.shape
            module.weight.copy_(1.0 + BN_GAMMA_STD * torch.randn(shape, generator=generator))
            module.bias.copy_(BN_BETA_STD * torch.randn(shape, generator=generator))


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Set every BN's running mean/var to the batch statistics of `images`; leave model in eval.

    With momentum=None BN keeps a cumulative average, which after one train-mode pass equals the
    batch statistics exactly. Each BN sees statistics computed with the upstream BNs also
    normalising by this batch, which is what it sees in eval mode on the same images, so every
    BN's output has per-channel mean ~beta and std ~gamma: activations stay O(1) at any depth.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    try:
        model(images)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()


@contextlib.contextmanager
def _capture(convs: list[nn.Conv2d]) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """Record (input, output) of each conv during the forward passes run inside the block."""
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [
        c.register_forward_hook(lambda _m, inp, out: captured.append((inp[0], out)))
        for c in convs
    ]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _standardize_outputs(
    convs: list[nn.Conv2d],
    captured: list[tuple[torch.Tensor, torch.Tensor]],
    std: float | torch.Tensor,
) -> None:
    """Rescale terminal biased convs so each output channel has mean 0 and spread about `std`
    (a scalar, or one value per output channel).

    The spread is the larger of the one the conv would have if its input channels varied
    independently, sum_c,k w^2 var(x_c), and the measured one: a small calibration batch can see
    deep features that are nearly collinear, so either estimate alone can be far too small, the
    gain overfits it, and on other images the logits explode (exp(w, h) overflowing fp16). The mean is measured:
    a random head's inputs come after ReLU/leaky and are mostly positive, which would otherwise
    put its logits far from zero. Valid only for convs that feed nothing else in the model.
    """
    for conv, (inp, out) in zip(convs, captured):
        in_var = inp.transpose(0, 1).reshape(inp.shape[1], -1).var(dim=1)
        independent = (conv.weight.square().sum(dim=(2, 3)) @ in_var).sqrt()
        measured = out.transpose(0, 1).reshape(out.shape[1], -1).std(dim=1)
        # the larger of the two: collinear features can also make the true spread much larger
        # than the independent estimate (box sizes of 600 000 px were seen with it alone)
        spread = torch.maximum(independent, measured)
        gain = std / spread.clamp_min(1e-12)
        out_mean = out.mean(dim=(0, 2, 3))
        conv.weight.mul_(gain.view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias - out_mean) * gain)


@torch.no_grad()
def synthetic_fastpose(seed: int = 0, num_joints: int = 17) -> FastPose:
    """A calibrated random FastPose-R50 256x192 (eval mode) with AlphaPose's architecture."""
    spec = PoseModelSpec(num_joints=num_joints)
    generator = torch.Generator().manual_seed(seed)
    model = FastPose(num_joints=num_joints, num_layers=spec.num_layers)
    randomize_weights(model, generator)
    for module in model.modules():
        if isinstance(module, Bottleneck):
            module.bn3.weight.mul_(RESIDUAL_GAMMA_SCALE)
    crops = random_images(generator, POSE_CALIBRATION_IMAGES, *spec.input_size)
    crops -= torch.tensor(spec.pixel_mean).view(1, 3, 1, 1)
    # The train-mode calibration pass normalises with the very statistics it stores, so the
    # head's inputs it records are those of the calibrated model: no second pass needed.
    with _capture([model.conv_out]) as captured:
        calibrate_batchnorm(model, crops)
    _standardize_outputs([model.conv_out], captured, HEATMAP_STD)
    return model


def write_synthetic_fastpose(path: str | os.PathLike, seed: int = 0, num_joints: int = 17) -> Path:
    """Write a synthetic FastPose checkpoint: a plain state_dict with AlphaPose's key names."""
    path = Path(path)
    model = synthetic_fastpose(seed, num_joints)
    with atomic_write(path, "wb") as fh:
        torch.save(model.state_dict(), fh)
    return path


def _detector_heads(model: Darknet) -> list[nn.Conv2d]:
    """The convs whose raw output each [yolo] layer decodes (the layer just before it)."""
    layers = list(model.module_list)
    return [layers[i - 1].conv for i, m in enumerate(layers) if isinstance(m, YoloLayer)]


@torch.no_grad()
def synthetic_yolov3_spp(seed: int = 0, img_size: int = DEFAULT_IMG_SIZE) -> Darknet:
    """A calibrated random YOLOv3-SPP (eval mode) built for `img_size`.

    Calibration always runs at DETECTOR_CALIBRATION_SIZE; the weights do not depend on the
    input size, so a model for another size gets the same weights.
    """
    generator = torch.Generator().manual_seed(seed)
    model = build_yolov3_spp(DETECTOR_CALIBRATION_SIZE)
    randomize_weights(model, generator)
    layers = list(model.module_list)
    for i, layer in enumerate(layers):
        if isinstance(layer, Shortcut):
            layers[i - 1].bn.weight.mul_(DETECTOR_RESIDUAL_GAMMA_SCALE)
    images = random_images(
        generator, DETECTOR_CALIBRATION_IMAGES, DETECTOR_CALIBRATION_SIZE, DETECTOR_CALIBRATION_SIZE
    )
    heads = _detector_heads(model)
    with _capture(heads) as captured:
        calibrate_batchnorm(model, images)
    per_anchor = BOX_ATTRIBUTES + model.num_classes
    spread = torch.full((per_anchor,), SCORE_LOGIT_STD)
    spread[: BOX_ATTRIBUTES - 1] = BOX_LOGIT_STD
    for head, pair in zip(heads, captured):
        _standardize_outputs([head], [pair], spread.repeat(head.out_channels // per_anchor))
        bias = head.bias.view(-1, per_anchor)  # channels are anchor-major: a * (5 + C) + attribute
        bias[:, BOX_ATTRIBUTES - 1] += OBJECTNESS_BIAS
        bias[:, BOX_ATTRIBUTES] += PERSON_LOGIT_BIAS
    if img_size == DETECTOR_CALIBRATION_SIZE:
        return model
    resized = build_yolov3_spp(img_size)
    resized.load_state_dict(model.state_dict())
    return resized.eval()


def write_synthetic_yolov3_spp(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write synthetic YOLOv3-SPP weights in darknet's `.weights` format."""
    path = Path(path)
    save_darknet_weights(synthetic_yolov3_spp(seed), path)
    return path


def write_synthetic_weights(outdir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write both models under their real file names; returns {'detector': ..., 'pose': ...}."""
    outdir = Path(outdir)
    return {
        "detector": write_synthetic_yolov3_spp(outdir / YOLOV3_SPP_FILENAME, seed),
        "pose": write_synthetic_fastpose(outdir / FASTPOSE_FILENAME, seed),
    }
