"""A small convolutional classifier: conv-norm-relu-pool blocks, global pooling, an MLP head."""

from torch import nn


class ConvNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: list[int] = (32, 64),
        hidden: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for out in channels:
            blocks += [
                nn.Conv2d(width, out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))
