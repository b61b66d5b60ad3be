"""The verbs of `avatar3d` (one module per verb): each a tyro config and a `main` over the library (see cli.py)."""
