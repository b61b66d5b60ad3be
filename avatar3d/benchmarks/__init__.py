"""Benchmarks that run whole avatar3d jobs (the rasterizer's own benchmark is avatar3d/benchmarks/raster.py)."""
