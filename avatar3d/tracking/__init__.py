"""Landmarks, subject choice, crop, rig fitting and smoothing: a video to tracking.npz."""
