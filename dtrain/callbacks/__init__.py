"""Callbacks dtrain adds to Lightning's: reproducible randomness, what every run records (throughput, MFU, memory, optimizer figures, convergence), sample grids."""
