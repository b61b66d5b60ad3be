"""Foreground masks: the torso-cut rule on a synthetic case, the streamed writer, and MediaPipe on a real frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.training.masks import MaskConfig, compute_masks, cut_torso, head_faces


def _disk(H, W, cx, cy, r):
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


def _scene(H=120, W=100, jitter=(0.0, 0.0)):
    """A fake person (hair > head, neck, wide torso, a far blob) and a fake rig silhouette (head + upper neck)."""
    dx, dy = jitter
    head = _disk(H, W, 50 + dx, 40 + dy, 20)
    hair = _disk(H, W, 50 + dx, 38 + dy, 27)
    neck = np.zeros((H, W), bool)
    neck[50:90, 42:58] = True
    torso = np.zeros((H, W), bool)
    torso[78:, 5:95] = True
    blob = _disk(H, W, 3, 3, 3)  # someone else far from the head
    person = (head | hair | neck | torso | blob).astype(np.float32)
    sil = head.copy()
    sil[55:72, 44:56] = True  # the rig's neck, cut 12 px below the chin
    chin, forehead = np.array([50 + dx, 60 + dy]), np.array([50 + dx, 20 + dy])
    return person, sil, chin, forehead


@pytest.mark.parametrize("coarse", [False, True])
def test_torso_removed_head_hair_neck_kept(coarse, seed):
    jitter = tuple(np.random.uniform(-3, 3, size=2))
    person, sil, chin, forehead = _scene(jitter=jitter)
    sil_t = torch.from_numpy(sil)
    if coarse:  # silhouette on a half-resolution grid, as compute_masks does
        sil_t = torch.nn.functional.max_pool2d(sil_t[None, None].float(), 2)[0, 0] > 0
    mask = cut_torso(person, sil_t, chin, forehead, MaskConfig(dilate=0.04, hair_line=0.1, hair_reach=0.5))
    assert mask.dtype == np.uint8 and mask.shape == person.shape
    dx, dy = (int(round(v)) for v in jitter)
    kept = lambda x, y: mask[y + dy, x + dx] > 200  # noqa: E731
    # head, hair above and beside the head (outside the rig silhouette), the upper neck: kept
    assert kept(50, 40) and kept(50, 14) and kept(74, 36) and kept(25, 36) and kept(50, 66)
    # torso (shoulders and the chest under the neck), the lower neck and the far blob: removed
    for x, y in ((12, 100), (88, 100), (50, 110), (50, 85), (20, 82)):
        assert mask[y + dy, x + dx] < 30, (x, y)
    assert mask[3, 3] == 0
    # nothing outside the person is ever kept
    assert (mask[person == 0] == 0).all()


def test_cut_follows_head_roll(seed):
    """Rolled 90 degrees (chin to the left), the torso is to the left: it goes, the hair to the right stays."""
    person, sil, chin, forehead = _scene()
    rot = lambda a: np.ascontiguousarray(np.rot90(a, k=-1))  # noqa: E731  (clockwise: down -> left)
    person_r, sil_r = rot(person), rot(sil)
    H = person.shape[0]
    to_r = lambda p: np.array([H - p[1], p[0]])  # noqa: E731  pixel (x, y) -> rotated (x', y')
    mask = cut_torso(person_r, torch.from_numpy(sil_r), to_r(chin), to_r(forehead))
    x, y = to_r((50, 14))
    assert mask[int(y), int(x)] > 200  # hair
    x, y = to_r((12, 100))
    assert mask[int(y), int(x)] < 30  # shoulder


def test_degenerate_pose_is_refused():
    person, sil, chin, _ = _scene()
    with pytest.raises(InputError):
        cut_torso(person, torch.from_numpy(sil), chin, chin)


def test_compute_masks_streams_and_swaps_atomically(tmp_path, seed):
    from PIL import Image

    from avatar3d.camera import intrinsics, orbit_viewmat
    from avatar3d.head.registry import load_rig
    from avatar3d.head.rig import RigParams
    from conftest import sequence_of

    rig = load_rig("synthetic")
    n, R = 5, 96
    p = RigParams.zeros(rig, n)
    p.neck[:, 1] = torch.linspace(-0.3, 0.3, n)  # the head turns
    K, viewmat = intrinsics(30.0, R, R), orbit_viewmat(0.8, target=(0.0, -0.05, 0.0))
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(n):
        Image.fromarray(np.full((R, R, 3), 128, np.uint8)).save(frames / f"{t:06d}.png")
    seq = sequence_of(rig, p, K, viewmat, R)
    out = tmp_path / "data" / "masks"
    out.mkdir(parents=True)
    (out / "stale.png").write_bytes(b"old")
    everyone = lambda frame: np.ones(frame.shape[:2], np.float32)  # noqa: E731  the whole frame is "person"
    seen = []
    stats = compute_masks(frames, seq, rig, out, config=MaskConfig(work_resolution=48),
                          segmenter=everyone, progress=seen.append)
    assert seen == list(range(n)) and stats["frames"] == n
    assert sorted(q.name for q in out.iterdir()) == [f"{t:06d}.png" for t in range(n)]
    from avatar3d.training.masks import read_person

    for t in range(n):
        m = np.asarray(Image.open(out / f"{t:06d}.png").convert("L"))
        assert m.dtype == np.uint8 and m.shape == (R, R)
        assert 0.1 < (m > 127).mean() < 0.9  # the head, not the whole frame
        assert m[-1, 0] == 0 and m[-1, -1] == 0  # bottom corners: torso side
        person = read_person(out / f"{t:06d}.png")  # the whole person is kept beside it (portraits)
        assert person.shape == (R, R) and (person[8:-8, 8:-8] == 255).all()
    assert 0.0 < stats["torso_removed_mean"] < 1.0
    # a failing run leaves the earlier masks intact
    def broken(frame):
        raise RuntimeError("segmenter crashed")
    before = sorted(q.name for q in out.iterdir())
    with pytest.raises(RuntimeError):
        compute_masks(frames, seq, rig, out, segmenter=broken)
    assert sorted(q.name for q in out.iterdir()) == before


def test_head_faces_cut_the_neck_below_the_chin():
    from avatar3d.head.registry import load_rig

    rig = load_rig("synthetic")
    shallow, deep = head_faces(rig, 0.01), head_faces(rig, 0.2)
    assert 0 < int(shallow.sum()) < int(deep.sum()) <= int(rig.renderable_faces().sum())
    with pytest.raises(InputError):
        head_faces(rig, -1.0)


def test_mediapipe_person_mask_on_a_real_frame(shared):
    pytest.importorskip("mediapipe")
    from avatar3d.io.media import VideoReader
    from avatar3d.training.masks import SelfieSegmenter

    with VideoReader(shared / "data" / "video" / "May_5s.mp4") as video:
        frame = next(iter(video))
    seg = SelfieSegmenter(0)
    try:
        person = seg(frame)
    finally:
        seg.close()
    H, W = person.shape
    assert (H, W) == frame.shape[:2] and person.dtype == np.float32
    # the face sits in the upper middle of this clip; the top corners are background
    assert person[int(0.4 * H), W // 2] > 0.9
    corner = 24
    for patch in (person[:corner, :corner], person[:corner, -corner:]):
        assert patch.mean() < 0.1
