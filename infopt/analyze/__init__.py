"""Analysing where time goes: profiles, FLOPs and bytes, device peaks, rooflines."""
