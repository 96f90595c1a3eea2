"""What Lightning lacks for a strategy: process layouts, CPU shims, sharding plans."""
