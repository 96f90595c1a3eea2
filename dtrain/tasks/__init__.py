"""LightningModules, one per kind of learning problem; each wraps a plain net."""
