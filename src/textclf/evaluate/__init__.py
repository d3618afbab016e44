"""The evaluate stage's library: metrics, plot data, reports."""
