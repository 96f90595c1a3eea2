"""Helpers for the convergence-bar tests."""


def stop_at(monitor: str, threshold: float, mode: str = "max") -> list[str]:
    """Overrides that end a run at the first validation where `monitor` reaches `threshold`
    (Lightning's EarlyStopping with a stopping threshold): a bar test then takes the time to the
    bar, not the model's whole budget. The test set is still scored on the best checkpoint."""
    key = "+callbacks.stop_at_bar"
    return [
        f"{key}._target_=lightning.pytorch.callbacks.EarlyStopping",
        f"{key}.monitor={monitor}",
        f"{key}.mode={mode}",
        f"{key}.stopping_threshold={threshold}",
        f"{key}.patience=1000000",
        f"{key}.verbose=false",
    ]

