"""Channel padding of convolutions whose channel counts suit no tensor-core kernel.

cuDNN's fp16 channels_last kernels want channel counts that are multiples of 8 (or at least 4 for
the input). The detector's first convolution reads 3 channels at 608x608 and its three heads
write 255 (3 anchors x 85); the fallback kernels for those shapes took 0.46 ms and 0.18 ms of the
detector's 4.1 ms at batch 8 (H100, `benchmarks/conv_layers.py`). A zero fourth input channel and
a zero 256th filter whose output is sliced off give the same result with faster kernels: the
compiled detector at batch 8 went from 2,026 to 2,131 images/s (`benchmarks/model_levers.py
--variants compiled,pad-channels`). The pose net's 3-channel input and 17 heatmaps gained nothing
measurable but lose nothing either, so the rule is the same for both models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RGB_CHANNELS = 3
RGB_CHANNELS_TO = 4  # input channels given to convolutions that read RGB
OUT_CHANNELS_MULTIPLE = 8  # output channels rounded up to this


class PaddedConv(nn.Module):
    """`conv` with zero input channels appended to its input and zero filters whose outputs are
    sliced off: the same values, channel counts that suit tensor-core kernels."""

    def __init__(self, conv: nn.Conv2d, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.extra_in, self.out_channels = in_channels - conv.in_channels, conv.out_channels
        self.conv = nn.Conv2d(
            in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            bias=conv.bias is not None, padding_mode=conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[: conv.out_channels, : conv.in_channels] = conv.weight
            if conv.bias is not None:
                self.conv.bias.zero_()
                self.conv.bias[: conv.out_channels] = conv.bias
        self.conv.requires_grad_(conv.weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_in:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_in))
        y = self.conv(x)
        return y[:, : self.out_channels] if self.conv.out_channels != self.out_channels else y


def pad_channels(module: nn.Module) -> int:
    """Replace, in place, every ungrouped convolution of `module` that reads 3 channels or writes
    a number of channels that is not a multiple of 8 with its `PaddedConv`; returns how many."""
    replacements = []
    for name, conv in module.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
            continue
        cin = RGB_CHANNELS_TO if conv.in_channels == RGB_CHANNELS else conv.in_channels
        cout = -(-conv.out_channels // OUT_CHANNELS_MULTIPLE) * OUT_CHANNELS_MULTIPLE
        if (cin, cout) != (conv.in_channels, conv.out_channels):
            replacements.append((name, PaddedConv(conv, cin, cout)))
    for name, padded in replacements:
        parent, _, attr = name.rpartition(".")
        setattr(module.get_submodule(parent), attr, padded)
    return len(replacements)
