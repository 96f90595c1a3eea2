"""LightningDataModules, one file per kind of data."""
