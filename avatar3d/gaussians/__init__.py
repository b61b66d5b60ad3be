"""Gaussians bound to the rig's triangles: parameters, posing, densification, the avatar render path, the file."""
