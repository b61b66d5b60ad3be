"""Driving an avatar: parameter sequences, user controls, cameras and motion transfer.

`DriveParams` (params.py) is what every driver produces; `Controls` (controls.py) is what the user changes
on top; viewpoint.py turns controls into the camera of a frame; face.py applies face, head and gaze
controls; transfer.py moves another person's tracked motion onto an avatar.
"""
from avatar3d.drive.controls import Controls, parse_distance, parse_expression_edits, parse_gaze, parse_head_pose
from avatar3d.drive.params import DriveParams

__all__ = ["Controls", "DriveParams", "parse_distance", "parse_expression_edits", "parse_gaze", "parse_head_pose"]
