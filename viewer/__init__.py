"""The interactive browser viewer (installed as `avatar3d_viewer`)."""
