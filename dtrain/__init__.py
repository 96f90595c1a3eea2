"""dtrain: train any architecture family at any scale from one command line."""

__version__ = "0.1.0"
