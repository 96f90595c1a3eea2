"""Checks of the composed config: mistakes a user can make, reported before any training."""
