"""Plain nn.Modules, one file per architecture family: no Lightning, no Hydra, no I/O."""
