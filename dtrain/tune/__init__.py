"""Ray Tune sweeps: `python -m dtrain.tune sweep=<name>`, every trial a normal dtrain run."""
