"""Rig fitting to landmarks: exact reduced posing, metrics, and recovery of known parameters (no MediaPipe)."""
from __future__ import annotations

import math

import pytest
import torch

from avatar3d.errors import InputError
from avatar3d.head.lbs import landmarks as rig_landmarks
from avatar3d.head.lbs import pose_vertices
from avatar3d.head.registry import synthetic_with_embedding
from avatar3d.head.rig import RigParams
from avatar3d.rotation import (angle_between_axis_angles, angle_between_matrices, axis_angle_to_matrix,
                               euler_to_axis_angle)
from avatar3d.tracking.fit import FitConfig, fit_sequence, make_K, project
from avatar3d.tracking.landmark_rig import LandmarkRig
from avatar3d.tracking.losses import IRIS_IDX, STABLE
from avatar3d.tracking.metrics import cv_mask, landmark_rmse, pose_jitter_deg, tracking_metrics

# Recovery tolerances (synthetic rig, 30 frames, 1 px Gaussian noise + 2% outliers of ~10 px)
HEAD_MAX_DEG = 1.5  # head rotation (root @ neck), every frame
JAW_MAX_DEG = 2.0  # jaw rotation, every frame
# Eye rotations, mean over frames and eyes (1 px of iris noise is ~2 deg of gaze). Over 70 seeds the mean was
# 2.0-3.0 deg (one at 3.03: the old bound of 3.0 failed a soak); a fit that ignored the irises would miss by the
# gaze's own amplitude, 15-18 deg.
GAZE_MEAN_DEG = 3.5
GAZE_MAX_DEG = 6.0
# Expression coefficients (unit = full expression), mean absolute error, split in two (see test_synthetic_recovery):
EXPR_MOTION_MEAN_ABS = 0.06  # each coefficient about its clip mean (the expression's motion), all frames
EXPR_CLIP_MEAN_ABS = 0.12  # the clip means, mean over coefficients (where the fit's priors bias them)
FOCAL_REL = 0.12  # shared focal length, relative error (focal and distance are nearly ambiguous)
CLEAN_RMSE_PX = 1.0  # fitted landmarks against the noise-free projections
NOISY_RMSE_PX = 1.5 * math.sqrt(2) + 1.0  # against the noisy detections: the noise itself is ~1.4 px RMS


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are small: one thread is fastest and avoids thread contention on a busy runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _random_params(rig, T: int, g: torch.Generator) -> RigParams:
    """Smooth motion: each curve is a slow sinusoid (0.2..0.7 cycles over the clip)."""
    t = torch.linspace(0, 1, T)

    def curve(n, amp, centre=0.0):
        phase = torch.rand(n, generator=g) * 2 * math.pi
        freq = 0.2 + torch.rand(n, generator=g) * 0.5
        return centre + amp * torch.sin(2 * math.pi * freq * t[:, None] + phase)

    one = lambda amp, centre=0.0: curve(1, amp, centre)[:, 0]  # noqa: E731
    jaw = torch.zeros(T, 3)
    jaw[:, 0] = one(0.12, 0.12).clamp_min(0)  # up to ~14 deg open
    root_yaw = float(torch.rand(1, generator=g)) * 10 - 5
    root = euler_to_axis_angle(torch.full((T,), root_yaw), torch.zeros(T), torch.zeros(T))
    neck = euler_to_axis_angle(one(20.0), one(8.0), one(4.0))  # head within +-25 deg yaw
    gaze = euler_to_axis_angle(one(15.0), one(10.0), torch.zeros(T))
    transl = torch.stack([one(0.01), one(0.01), one(0.02, -0.6)], -1)
    return RigParams(shape=torch.randn(rig.num_shape, generator=g) * 0.8,
                     expr=curve(rig.num_expr, 0.35, 0.35).clamp(0, 1), global_rot=root, neck=neck, jaw=jaw,
                     eyes=torch.stack([gaze, gaze], 1), transl=transl)


def test_landmark_rig_matches_full_posing(seed):
    """The reduced posing (landmark-triangle corners only) equals posing the whole mesh."""
    rig = synthetic_with_embedding()
    B = 3
    p = RigParams(torch.randn(rig.num_shape), torch.rand(B, rig.num_expr), torch.randn(B, 3) * 0.3,
                  torch.randn(B, 3) * 0.3, torch.randn(B, 3) * 0.2, torch.randn(B, 2, 3) * 0.2, torch.randn(B, 3) * 0.1)
    full = rig_landmarks(rig, pose_vertices(rig, p))
    reduced, head_rot, transl = LandmarkRig(rig)(p.shape, p.expr, p.full_pose(), p.transl)
    assert torch.allclose(reduced, full, atol=1e-6)
    assert torch.allclose(transl, p.transl)
    want_rot = axis_angle_to_matrix(p.global_rot) @ axis_angle_to_matrix(p.neck)
    assert torch.allclose(head_rot, want_rot, atol=1e-6)
    # a subset gives those landmarks; an anchor turns `transl` into the anchor's world position
    sub = LandmarkRig(rig, subset=STABLE)
    anchor = torch.randn(3) * 0.05
    target = torch.randn(B, 3)
    lm_sub, _, rig_transl = sub(p.shape, p.expr, p.full_pose(), target, anchor=anchor)
    again = rig_landmarks(rig, pose_vertices(rig, RigParams(p.shape, p.expr, p.global_rot, p.neck, p.jaw, p.eyes,
                                                            rig_transl)))
    assert torch.allclose(lm_sub, again[:, list(STABLE)], atol=1e-6)


def test_synthetic_recovery(seed):
    """Known parameters -> projected landmarks + detector-like noise -> fit -> the parameters come back."""
    rig = synthetic_with_embedding()
    g = torch.Generator().manual_seed(seed)
    T, W, H = 30, 512, 512
    truth = _random_params(rig, T, g)
    focal = torch.tensor(900.0 + 500.0 * float(torch.rand(1, generator=g)))
    with torch.no_grad():
        clean = project(rig_landmarks(rig, pose_vertices(rig, truth)), focal, (W / 2, H / 2))  # [T,478,2]
    noisy = clean + torch.randn(clean.shape, generator=g)
    outliers = torch.rand(T, 478, generator=g) < 0.02
    noisy[outliers] += torch.randn(int(outliers.sum()), 2, generator=g) * 10.0
    K0 = make_K(focal * (1.0 + 0.1 * (float(torch.rand(1, generator=g)) - 0.5)), W, H)  # a +-5% guess
    held = cv_mask()
    cfg = FitConfig(shape_iters=120, full_iters=120)
    res = fit_sequence(rig, noisy, torch.ones(T), (W, H), K_init=K0, cv_mask=held, config=cfg)

    q = res.params
    assert q.shape.shape == (rig.num_shape,) and q.expr.shape == (T, rig.num_expr) and q.eyes.shape == (T, 2, 3)
    assert torch.allclose(q.global_rot, q.global_rot[:1].expand(T, 3))  # one root rotation per video
    true_head = axis_angle_to_matrix(truth.global_rot) @ axis_angle_to_matrix(truth.neck)
    head_err = angle_between_matrices(true_head, res.head_rotation)
    assert float(head_err.max()) < HEAD_MAX_DEG, head_err
    jaw_err = angle_between_axis_angles(truth.jaw, q.jaw)
    assert float(jaw_err.max()) < JAW_MAX_DEG, jaw_err
    gaze_err = angle_between_axis_angles(truth.eyes, q.eyes)
    assert float(gaze_err.mean()) < GAZE_MEAN_DEG and float(gaze_err.max()) < GAZE_MAX_DEG, gaze_err
    # Expression: the motion over the clip tightly, the clip means loosely. The clip means carry the priors' bias
    # (with clean landmarks and no priors every coefficient comes back to < 0.01): the shape prior pulls head width /
    # face length towards the mean identity and the brow shapes absorb part of it (up to ~0.2), and the expression
    # prior shrinks the blinks by ~25%, which this rig's landmarks barely see (its lids move mostly towards the
    # camera: +0.1 blink moves the eye contour ~0.07 px). Both grow with the drawn identity and blink levels.
    motion_err = (q.expr - q.expr.mean(0)) - (truth.expr - truth.expr.mean(0))  # [T,E]
    assert float(motion_err.abs().mean()) < EXPR_MOTION_MEAN_ABS, motion_err.abs().mean(0)
    clip_err = q.expr.mean(0) - truth.expr.mean(0)  # [E]
    assert float(clip_err.abs().mean()) < EXPR_CLIP_MEAN_ABS, clip_err
    assert abs(float(res.K[0, 0]) / float(focal) - 1.0) < FOCAL_REL
    assert torch.allclose(res.K[:2, 2], torch.tensor([W / 2, H / 2]))

    # the returned parameters reproduce the returned projections through the full rig
    with torch.no_grad():
        again = project(rig_landmarks(rig, pose_vertices(rig, q)), res.K[0, 0], (W / 2, H / 2))
    assert torch.allclose(again, res.projected, atol=1e-2)
    valid = rig.landmarks_mp.valid
    assert landmark_rmse(res.projected[:, valid], clean[:, valid]) < CLEAN_RMSE_PX
    m = tracking_metrics(res.projected, noisy, res.head_rotation, held)
    assert m["landmark_rmse_px"] < NOISY_RMSE_PX
    assert math.isfinite(m["cv_rmse_px"]) and m["cv_rmse_px"] < NOISY_RMSE_PX + 0.5
    assert set(res.losses) == {"rigid", "shape", "full"} and all(res.history[s] for s in res.losses)
    print({k: round(v, 3) for k, v in m.items()})


def test_failed_frames_are_bridged(seed):
    """Frames with confidence 0 do not pull the fit; smoothness carries the parameters across them."""
    rig = synthetic_with_embedding()
    g = torch.Generator().manual_seed(seed)
    T = 20
    truth = _random_params(rig, T, g)
    with torch.no_grad():
        clean = project(rig_landmarks(rig, pose_vertices(rig, truth)), torch.tensor(1100.0), (256.0, 256.0))
    garbage = clean.clone()
    garbage[8:11] = torch.rand(3, 478, 2, generator=g) * 512  # a detector glitch
    conf = torch.ones(T)
    conf[8:11] = 0.0
    res = fit_sequence(rig, garbage, conf, (512, 512), K_init=make_K(torch.tensor(1100.0), 512, 512),
                       config=FitConfig(rigid_iters=20, shape_iters=40, full_iters=30))
    assert torch.isfinite(res.projected).all()
    err = (res.projected - clean).norm(dim=-1)[:, rig.landmarks_mp.valid].mean(-1)  # [T] px
    # bridged by smoothness (the true motion is not linear across the gap, so a few px remain),
    # not dragged to the garbage, which sits ~200 px away
    garbage_err = (garbage - clean).norm(dim=-1)[8:11][:, rig.landmarks_mp.valid].mean(-1)
    assert float(err[8:11].max()) < 10.0, err
    assert float(err[8:11].max()) < 0.05 * float(garbage_err.min()), (err, garbage_err)
    assert float(err[conf > 0].mean()) < 3.0, err


def test_pose_jitter():
    T = 12
    steady = euler_to_axis_angle(torch.linspace(0, 22, T), torch.zeros(T), torch.zeros(T))
    assert pose_jitter_deg(axis_angle_to_matrix(steady)) < 1e-3  # constant angular velocity: no jitter
    wobble = torch.tensor([0.0, 1.0] * (T // 2))  # +-1 deg alternating yaw: second difference 2 deg
    rot = axis_angle_to_matrix(euler_to_axis_angle(wobble, torch.zeros(T), torch.zeros(T)))
    assert abs(pose_jitter_deg(rot) - 2.0) < 1e-3


def test_cv_mask_and_rmse(seed):
    a, b = cv_mask(), cv_mask()
    assert torch.equal(a, b) and int(a.sum()) == round(0.1 * 468)
    assert not a[list(IRIS_IDX)].any() and not a[[33, 263]].any()
    pred = torch.randn(4, 478, 2)
    shift = torch.zeros_like(pred)
    shift[..., 0] = 3.0
    shift[..., 1] = 4.0
    assert abs(landmark_rmse(pred + shift, pred) - 5.0) < 1e-4
    frames = torch.tensor([True, False, True, True])
    shift[1] = 100.0
    assert abs(landmark_rmse(pred + shift, pred, frames=frames) - 5.0) < 1e-4


def test_input_validation():
    rig = synthetic_with_embedding()
    good = torch.rand(5, 478, 2) * 100
    with pytest.raises(InputError, match="478"):
        fit_sequence(rig, torch.rand(5, 468, 2), torch.ones(5), (100, 100))
    with pytest.raises(InputError, match="confidence"):
        fit_sequence(rig, good, torch.ones(4), (100, 100))
    with pytest.raises(InputError, match="confidence 0"):
        fit_sequence(rig, good, torch.zeros(5), (100, 100))
    bad = good.clone()
    bad[2, 7] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        fit_sequence(rig, bad, torch.ones(5), (100, 100))
    with pytest.raises(InputError, match="image_size"):
        fit_sequence(rig, good, torch.ones(5), (0, 100))
    with pytest.raises(InputError, match="cv_mask"):
        fit_sequence(rig, good, torch.ones(5), (100, 100), cv_mask=torch.ones(478))
    rig.landmarks_mp = None
    with pytest.raises(InputError, match="embedding"):
        fit_sequence(rig, good, torch.ones(5), (100, 100))


def test_ict_landmark_rig_matches_full_posing(shared, tmp_home, seed):
    """ICT-FaceKit (26,719 vertices, jaw corrective, gaze-driven eyelids): reduced posing is exact."""
    from avatar3d.head.registry import install_ict, load_rig

    install_ict(shared / "headmodels" / "ICT-FaceKit")
    rig = load_rig("ict")
    B = 2
    p = RigParams(torch.randn(rig.num_shape), torch.rand(B, rig.num_expr), torch.randn(B, 3) * 0.2,
                  torch.randn(B, 3) * 0.2, torch.randn(B, 3) * 0.15, torch.randn(B, 2, 3) * 0.2, torch.randn(B, 3) * 0.1)
    full = rig_landmarks(rig, pose_vertices(rig, p))
    reduced, _, _ = LandmarkRig(rig)(p.shape, p.expr, p.full_pose(), p.transl)
    assert torch.allclose(reduced, full, atol=1e-5)


def _blink_clip(rig, T: int, blink_frames: slice, g: torch.Generator) -> RigParams:
    """A calm clip (small expressions, the lids a little lowered) with one blink: the lids shut at `blink_frames`."""
    truth = _random_params(rig, T, g)
    truth.shape = truth.shape * 0.5
    truth.expr = truth.expr * 0.2
    lids = [list(rig.expr_names).index(n) for n in ("eyeBlink_L", "eyeBlink_R")]
    truth.expr[:, lids] = 0.1
    truth.expr[blink_frames, lids[0]] = 1.0
    truth.expr[blink_frames, lids[1]] = 1.0
    return truth


def test_ict_blinks_are_tracked(shared, tmp_home, seed):
    """The lids shut for three frames come back shut (the eye-closure term: the expressions' smoothing and the lid
    points' Huber penalty held a blink to a third of its depth), and open elsewhere."""
    from avatar3d.head.registry import install_ict, load_rig

    install_ict(shared / "headmodels" / "ICT-FaceKit")
    rig = load_rig("ict")
    g = torch.Generator().manual_seed(seed)
    T, W, H = 24, 512, 512
    truth = _blink_clip(rig, T, slice(10, 13), g)
    focal = torch.tensor(1100.0)
    with torch.no_grad():
        clean = project(rig_landmarks(rig, pose_vertices(rig, truth)), focal, (W / 2, H / 2))
    noisy = clean + 0.5 * torch.randn(clean.shape, generator=g)
    res = fit_sequence(rig, noisy, torch.ones(T), (W, H), K_init=make_K(focal, W, H))
    lids = [list(rig.expr_names).index(n) for n in ("eyeBlink_L", "eyeBlink_R")]
    blink = res.params.expr[:, lids].mean(1)
    print("blink per frame", [round(float(b), 2) for b in blink])
    assert float(blink[10:13].min()) > 0.7, blink
    open_frames = torch.cat([blink[:8], blink[15:]])
    assert float(open_frames.max()) < 0.35, blink


def test_eye_closure_term_sees_the_lids_opening_not_where_the_eye_sits(seed):
    from avatar3d.tracking.losses import EYELID_PAIRS, eye_closure_loss

    g = torch.Generator().manual_seed(seed)
    target = 100 * torch.rand(4, 478, 2, generator=g)
    shifted = target + 7.0 * torch.randn(4, 1, 2, generator=g)  # the whole face moved: the same openings
    weights = torch.ones(len(EYELID_PAIRS))
    conf = torch.ones(4)
    assert float(eye_closure_loss(shifted, target, weights, conf, 1.0, 1.0)) < 1e-6
    closed = shifted.clone()
    upper = [u for u, _ in EYELID_PAIRS]
    lower = [v for _, v in EYELID_PAIRS]
    closed[:, upper] = closed[:, lower]  # the lids meet
    gap = ((target[:, upper] - target[:, lower]) ** 2).sum(-1)  # [4,P] what the closure misses
    torch.testing.assert_close(eye_closure_loss(closed, target, weights, conf, 2.0, 3.0), gap.sum() / 4.0 / 3.0)
    only_first = torch.zeros(len(EYELID_PAIRS))
    only_first[0] = 1.0
    torch.testing.assert_close(eye_closure_loss(closed, target, only_first, conf, 1.0, 1.0), gap[:, 0].sum())
