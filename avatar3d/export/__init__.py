"""Clips (H.264 + AAC, alpha), 3DGS PLY and rigged-bundle export of an avatar."""
