"""torchvision's image classifiers (ResNet, DenseNet, MobileNet, EfficientNet, Inception), untrained,
with the first convolution fitted to the data's channels and, optionally, to small images."""

import torch
from torch import nn

# family -> (default architecture, path to the first conv, path to the stem's pooling layer)
FAMILIES = {
    "resnet": ("resnet18", "conv1", "maxpool"),
    "densenet": ("densenet121", "features.conv0", "features.pool0"),
    "mobilenet": ("mobilenet_v3_small", "features.0.0", None),
    "efficientnet": ("efficientnet_b0", "features.0.0", None),
    "inception": ("inception_v3", "Conv2d_1a_3x3.conv", None),
}
# Inception v3's fixed pooling stages need at least this many pixels a side.
INCEPTION_MIN_SIZE = 75


class VisionNet(nn.Module):
    """One of torchvision's classifiers, `weights=None`.

    `family` picks the kind, `arch` a torchvision builder of that kind (default: its smallest
    common member, e.g. resnet18) or one of torchvision's model classes (e.g. `DenseNet`), built
    with `options` (e.g. a smaller DenseNet: growth_rate, block_config, num_init_features). `small_stem=True` replaces the stem's strided convolution by a
    stride-1 3x3 one and drops the stem's pooling: the usual adaptation to tiny (CIFAR-sized)
    images, 16x the stem's compute but it keeps spatial detail the default stem throws away.
    """

    def __init__(
        self,
        family: str,
        in_channels: int,
        num_classes: int,
        image_size: int,
        arch: str | None = None,
        small_stem: bool = False,
        options: dict | None = None,
        bn_momentum: float | None = 0.1,
    ):
        super().__init__()
        import torchvision

        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
        default_arch, conv_path, pool_path = FAMILIES[family]
        arch = arch or default_arch
        kwargs = {"weights": None, "num_classes": num_classes}
        if family == "inception":
            if image_size < INCEPTION_MIN_SIZE:
                raise ValueError(f"inception needs images of at least {INCEPTION_MIN_SIZE} px, got {image_size}")
            kwargs.update(aux_logits=False, init_weights=True)
        kwargs.update(options or {})
        if arch[0].isupper():  # a model class: it takes no `weights`
            kwargs.pop("weights")
            self.net = getattr(torchvision.models, arch)(**kwargs)
        else:
            self.net = torchvision.models.get_model(arch, **kwargs)

        old = self.net.get_submodule(conv_path)
        stride, kernel = (1, 3) if small_stem else (old.stride, old.kernel_size)
        padding = kernel // 2 if isinstance(kernel, int) else tuple(k // 2 for k in kernel)
        if family == "inception":
            padding = old.padding  # Inception's stem is unpadded by design
        new = nn.Conv2d(in_channels, old.out_channels, kernel, stride=stride, padding=padding, bias=old.bias is not None)
        _set(self.net, conv_path, new)
        if small_stem and pool_path is not None:
            _set(self.net, pool_path, nn.Identity())
        if bn_momentum is not None:
            # MobileNetV3 ships momentum 0.01: on a small data set the running statistics are
            # still near their initial values after hundreds of steps, so eval mode is chance.
            for module in self.net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.momentum = bn_momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)
