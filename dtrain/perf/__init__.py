"""Measuring a run's cost: FLOPs of a training step, the device's peak, the logging steps."""
