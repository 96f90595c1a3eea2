"""Reading finished run directories back (metrics, summary, wall time) for reports and comparisons."""
