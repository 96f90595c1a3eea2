"""Loggers where Lightning's own need a change for resumed runs."""
