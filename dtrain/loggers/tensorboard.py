"""Lightning's TensorBoardLogger, refused in one line when TensorBoard is not installed (the
`tensorboard` extra) instead of failing inside Lightning."""

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger

from dtrain.extras import require


class TensorBoardLogger(LightningTensorBoardLogger):
    def __init__(self, *args, **kwargs):
        require("tensorboard", ("tensorboard", "tensorboardX"), "logger.tensorboard")
        super().__init__(*args, **kwargs)
