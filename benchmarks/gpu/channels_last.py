"""dtrain's torchvision classifier kept in channels-last layout, for the ResNet-50 case."""

import torch

from dtrain.nets.vision import VisionNet


class ChannelsLastVisionNet(VisionNet):
    """VisionNet with its weights and every input in channels-last (NHWC) layout, the one cuDNN's
    tensor-core convolutions run without transposing. dtrain takes it as a user's own net
    (`model.net._target_=benchmarks.gpu.channels_last.ChannelsLastVisionNet`); the hand-written
    loop builds the same class, so both sides run the same kernels."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.contiguous(memory_format=torch.channels_last))
