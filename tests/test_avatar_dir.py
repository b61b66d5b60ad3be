"""The avatar manifest: round trip, clear refusals of damaged or foreign avatars."""
import json

import pytest

from avatar3d.errors import InputError
from avatar3d.head.registry import load_rig
from avatar3d.io.avatar_dir import AvatarManifest, AvatarPaths, check_rig, read_manifest, write_manifest


def test_round_trip_and_paths(tmp_path):
    rig = load_rig("synthetic")
    m = AvatarManifest(rig_name=rig.name, rig_checksum=rig.checksum(), source_video="clip.mp4",
                       settings={"preset": "fast"}, metrics={"psnr": 30.1})
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back == m
    check_rig(back, rig)
    paths = AvatarPaths(tmp_path)
    assert paths.frames == tmp_path / "data" / "frames" and paths.gaussians.name == "gaussians.safetensors"


def test_refusals(tmp_path):
    with pytest.raises(InputError, match="no avatar.json"):
        read_manifest(tmp_path)
    with pytest.raises(InputError, match="not an avatar folder"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "avatar.json").write_text("{broken")
    with pytest.raises(InputError, match="damaged"):
        read_manifest(tmp_path)
    (tmp_path / "avatar.json").write_text(json.dumps({"format_version": 99, "rig_name": "x", "rig_checksum": "y"}))
    with pytest.raises(InputError, match="format 99"):
        read_manifest(tmp_path)
    rig = load_rig("synthetic")
    other = AvatarManifest(rig_name=rig.name, rig_checksum="0" * 32)
    with pytest.raises(InputError, match="head model"):
        check_rig(other, rig)
