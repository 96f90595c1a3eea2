"""Callbacks dtrain adds to Lightning's: reproducible randomness, throughput."""
