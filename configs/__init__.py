"""YAML presets, installed as the package `avatar3d.configs` (see avatar3d/config.py)."""
