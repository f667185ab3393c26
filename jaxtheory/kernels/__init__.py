"""Infinite-width kernels (NNGP/NTK), empirical NTKs and kernel predictions."""
