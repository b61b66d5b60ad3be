"""A rendered frame's last step (render/finish.py): the native op (cuda_ext/finish_cpu.cpp) against its PyTorch
oracle (render/reference/finish.py) on seeded random frames and plates, and both against the plate's own warp."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar3d.render import native
from avatar3d.render.finish import finish_frame
from avatar3d.render.plate import BackgroundPlate
from avatar3d.render.reference.finish import finish_frame as finish_frame_reference
from avatar3d.render.reference.finish import PLATE_MIN_WEIGHT, reflect101

needs_ext = pytest.mark.skipif(not native.is_available(), reason="the native extension avatar3d._C is not built")


def _frame(rng, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.from_numpy(rng.uniform(-0.1, 1.1, (height, width, 3)).astype(np.float32))
    alpha = torch.from_numpy(rng.uniform(-0.05, 1.05, (height, width, 1)).astype(np.float32))
    return image * alpha.clamp(0, 1), alpha  # a premultiplied picture over black, with some values out of range


def _homography(rng) -> np.ndarray:  # a random perspective map, far enough from folding for the frame's size
    M = np.eye(3) + rng.uniform(-0.2, 0.2, (3, 3)) * np.array([[1, 1, 30], [1, 1, 30], [1e-3, 1e-3, 0]])
    return M


@needs_ext
@pytest.mark.parametrize("size", [(37, 53), (64, 64), (1, 7)])
def test_native_matches_the_reference(seed, size):
    rng = np.random.default_rng(seed)
    image, alpha = _frame(rng, *size)
    plate = rng.integers(0, 256, (int(rng.integers(1, 40)), int(rng.integers(2, 50)), 3), dtype=np.uint8)
    M = torch.as_tensor(_homography(rng))
    rgb, a, seen = native.finish_frame(image, alpha, torch.from_numpy(plate), M, True)
    rgb_ref, a_ref, seen_ref = finish_frame_reference(image, alpha, torch.from_numpy(plate), M)
    assert torch.equal(a, a_ref)
    # the same formula in float32 (native) and float64 coordinates: a level apart at most, and rarely
    for ours, theirs in ((rgb, rgb_ref), (seen, seen_ref)):
        diff = (ours.int() - theirs.int()).abs()
        assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


@pytest.mark.parametrize("use_native", [True, False])
def test_a_still_camera_composites_over_what_it_saw_with_the_same_result(seed, use_native):
    """The plate as seen (kept from one frame) composited through the identity map gives the very frame the
    homography gave: a still camera need not sample the plate again."""
    if use_native and not native.is_available():
        pytest.skip("the native extension avatar3d._C is not built")
    rng = np.random.default_rng(seed)
    image, alpha = _frame(rng, 33, 47)
    plate = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    M = _homography(rng)
    if use_native:
        first, _, seen = finish_frame(image, alpha, plate, M, keep_seen=True)
        again, _, _ = finish_frame(image, alpha, seen, np.eye(3))
    else:
        first_t, _, seen_t = finish_frame_reference(image, alpha, torch.from_numpy(plate), torch.as_tensor(M))
        again_t, _, _ = finish_frame_reference(image, alpha, seen_t, torch.eye(3, dtype=torch.float64))
        first, again = first_t.numpy(), again_t.numpy()
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("use_native", [True, False])
def test_where_the_person_hides_the_plate_it_is_not_seen(seed, use_native):
    """Where the plate's weight 1 - alpha is under PLATE_MIN_WEIGHT the frame is the picture alone, whatever the
    plate, and kept or not (the native op then skips sampling it) the frame is the same."""
    if use_native and not native.is_available():
        pytest.skip("the native extension avatar3d._C is not built")
    rng = np.random.default_rng(seed)
    image, _ = _frame(rng, 29, 41)
    weight = torch.from_numpy(rng.choice([0.0, 1e-4, 9e-4, PLATE_MIN_WEIGHT, 2e-3, 0.5], (29, 41, 1)).astype(np.float32))
    alpha = 1.0 - weight
    plate = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    M = _homography(rng)
    hidden = (1.0 - alpha.clamp(0, 1))[..., 0] < PLATE_MIN_WEIGHT
    assert 0.2 < float(hidden.float().mean()) < 0.8
    picture = finish_frame_reference(image, alpha)[0].numpy()
    runs = []
    for keep in (False, True):
        if use_native:
            rgb, a, _ = finish_frame(image, alpha, plate, M, keep_seen=keep)
        else:
            rgb_t, a_t, _ = finish_frame_reference(image, alpha, torch.from_numpy(plate), torch.as_tensor(M))
            rgb, a = rgb_t.numpy(), a_t.numpy()
        np.testing.assert_array_equal(rgb[hidden.numpy()], picture[hidden.numpy()])
        runs.append((rgb, a))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    # where it shows, it is composited: a plate of another colour changes the pixels that show half of it
    other = finish_frame_reference(image, alpha, torch.from_numpy(255 - plate), torch.as_tensor(M))[0].numpy()
    half = (weight[..., 0] == 0.5).numpy()
    assert (other[half] != runs[0][0][half]).any(axis=-1).mean() > 0.9


@needs_ext
def test_without_a_plate_the_frame_is_only_converted(seed):
    rng = np.random.default_rng(seed)
    image, alpha = _frame(rng, 20, 30)
    rgb, a, seen = finish_frame(image, alpha)
    assert seen is None
    expected = ((image.clamp(0, 1) * 255 + 0.5).to(torch.uint8)).numpy()
    np.testing.assert_array_equal(rgb, expected)
    np.testing.assert_array_equal(a, (alpha[..., 0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())


def test_an_identity_map_composites_a_picture_pixel_for_pixel(seed):
    """Where the rasterizer covered nothing the picture shows exactly; where it is opaque, the render."""
    rng = np.random.default_rng(seed)
    picture = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    image = torch.zeros(24, 32, 3)
    alpha = torch.zeros(24, 32, 1)
    alpha[:10] = 1.0
    image[:10] = 0.25
    for reference in (False, True):
        if reference:
            rgb, _, _ = finish_frame_reference(image, alpha, torch.from_numpy(picture),
                                               torch.eye(3, dtype=torch.float64))
            rgb = rgb.numpy()
        else:
            rgb, _, _ = finish_frame(image, alpha, picture, np.eye(3))
        np.testing.assert_array_equal(rgb[10:], picture[10:])
        assert (rgb[:10] == 64).all()


def test_reflect101_mirrors_without_repeating_the_edge():
    idx = torch.arange(-6, 12)
    assert reflect101(idx, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert reflect101(idx, 1).tolist() == [0] * len(idx)


def test_the_plate_composited_matches_opencvs_warp(seed):
    """Through a moved camera, the one-pass composite shows what OpenCV's perspective warp of the plate shows
    (OpenCV interpolates with 1/32-pixel weights: a few levels apart on sharp edges, never more)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = 90, 120
    noise = rng.uniform(0, 255, (h // 6 + 1, w // 6 + 1, 3)).astype(np.float32)
    texture = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    f = rng.uniform(120, 200)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])
    plate = BackgroundPlate(texture, K, np.eye(4), float(rng.uniform(1.5, 3.0)))
    moved = np.eye(4)
    moved[:3, 3] = rng.uniform(-0.2, 0.2, 3)
    c, s = np.cos(0.2), np.sin(0.2)
    moved[:3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    to_plate = plate.pixel_map(K, moved, w, h)
    assert to_plate is not None
    to_ours = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # OpenCV's pixel centres are integers
    warped = cv2.warpPerspective(texture, np.linalg.inv(to_ours) @ to_plate @ to_ours, (w, h),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REFLECT_101).astype(int)
    rgb, _, _ = finish_frame(torch.zeros(h, w, 3), torch.zeros(h, w, 1), plate.image, to_plate)
    diff = np.abs(rgb.astype(int) - warped)
    assert diff.max() <= 3 and diff.mean() < 0.5
    np.testing.assert_array_equal(plate.render(K, moved, w, h), rgb)  # the plate alone, sampled alike


@needs_ext
def test_bad_input_is_refused():
    image, alpha = torch.zeros(4, 5, 3), torch.zeros(4, 5, 1)
    M = torch.eye(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="uint8"):
        native.finish_frame(image, alpha, torch.zeros(3, 3, 3), M, False)
    with pytest.raises(RuntimeError, match="H\\*W"):
        native.finish_frame(image, torch.zeros(3, 5), torch.empty(0, dtype=torch.uint8), M, False)
    with pytest.raises(RuntimeError, match="float32"):
        native.finish_frame(image.double(), alpha, torch.empty(0, dtype=torch.uint8), M, False)
