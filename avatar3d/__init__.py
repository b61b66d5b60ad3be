"""avatar3d: personalized 3D Gaussian talking heads.

Enroll a person from a talking video, drive the avatar with speech, render it with our own
differentiable Gaussian rasterizer (CUDA, C++/OpenMP, or a pure-PyTorch oracle).
"""
__version__ = "0.1.0"
