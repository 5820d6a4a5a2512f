"""Measuring: timing a callable, sample statistics, peak memory, interference, the sweep protocol and what each sweep measures."""
