"""audio2expr."""
