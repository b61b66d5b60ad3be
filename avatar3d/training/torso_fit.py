"""Fit the torso proxy's proportions (head/torso.py) to one person from the segmentation's person masks.

From the front a camera sees the shoulders' width and how far they drop, not the chest's depth, so those two are
searched on a grid: for frames spread over the training part, the rig posed as tracked, with a candidate torso
attached, is drawn as a silhouette and compared with the person mask (intersection over union below the chin,
where the torso is; the head's own fit is the tracker's business). The chest depth follows the width (an average
adult's ratio) and the length reaches past the lower edge of the frame a camera backed off to twice the distance
sees (what no frame showed is filled in after training: training/torso_continue.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from avatar3d.errors import InputError
from avatar3d.head.lbs import landmarks, pose_vertices
from avatar3d.head.rig import HeadRig
from avatar3d.head.torso import SEGMENTS, TorsoShape, attach_torso, neck_base
from avatar3d.io.avatar_dir import FRAME_PATTERN
from avatar3d.render.mesh_raster import project_vertices, rasterize_triangles
from avatar3d.training.masks import CHIN, read_person

WIDTHS = tuple(np.round(np.arange(0.26, 0.57, 0.02), 3))  # shoulder widths searched, metres (a broad adult's 0.56)
DROPS = (0.0, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12)  # shoulder drops searched, metres
CHEST_PER_WIDTH = 0.5  # chest depth / shoulder width of an average adult...
CHEST_RANGE = (0.18, 0.27)  # ...within adults' chest depths
WORK = 96  # side of the grid the silhouettes are compared on
FRAMES = 8  # frames the fit looks at
IOU_TOLERANCE = 0.01  # candidates this close to the best overlap count as fitting as well
REACH = 2.0  # the torso reaches below the frame of a camera backed off this many times its distance...
FALL_BAND = 0.03  # ...in bands about this tall (metres): below the frame they are filled as the last one seen was
SECOND_PERSON_SHARE = 0.03  # a person-mask blob apart from the subject larger than this share of the picture


def _person(masks_dir: Path, frame: int) -> torch.Tensor:  # -> [WORK,WORK] float in [0,1]
    person = read_person(masks_dir / FRAME_PATTERN.format(frame))
    if person is None:
        raise InputError("the masks hold no person channel (made before portraits); re-run the segmentation "
                         "stage (re-enroll) to fit a torso")
    t = torch.from_numpy(person.astype(np.float32) / 255.0)[None, None]
    return F.interpolate(t, size=(WORK, WORK), mode="area")[0, 0]


def _chins(rig: HeadRig, heads: torch.Tensor) -> torch.Tensor:  # heads: [B,V,3] posed -> [B,3]
    """The chin: MediaPipe's chin landmark through the rig's embedding, or on a rig without one (the synthetic rig)
    the lowest vertex of its face region at rest."""
    if rig.landmarks_mp is not None:
        return landmarks(rig, heads)[:, CHIN]
    face = torch.nonzero(rig.region("face")).flatten()
    if len(face) == 0:
        raise InputError(f"the head model {rig.name!r} has neither a landmark embedding nor a face region, so its "
                         f"chin cannot be found to fit a torso; use a head model with a landmark embedding")
    return heads[:, face[rig.template[face, 1].argmin()]]


def _length(rig: HeadRig, base, params, seq, K: torch.Tensor, viewmat: torch.Tensor) -> float:
    """Metres from the neck's base down to 5 cm below the lower edge of the frame a camera backed off to REACH times
    its distance sees (at the neck's depth), in the frame where that reaches lowest (at most 0.9 m)."""
    probe = attach_torso(rig, TorsoShape(), base)
    with torch.no_grad():
        ring = pose_vertices(probe, params)[:, rig.num_vertices:][:, :SEGMENTS]  # [B,S,3] the top ring
    cam = ring @ viewmat[:3, :3].T + viewmat[:3, 3]  # camera frame: y down
    depth, top = cam[..., 2].mean(1), cam[..., 1].mean(1)  # [B]
    # camera y of the lower edge for a camera backed off along its axis: the ring REACH times as deep
    bottom = (float(seq.resolution) - float(K[1, 2])) * depth * REACH / float(K[1, 1])
    return float(np.clip(float((bottom - top).max()) + 0.05, 0.25, 0.9))


def fit_torso(seq, rig: HeadRig, masks_dir: Path, frames: list[int]) -> tuple[TorsoShape, dict]:
    """(the best proportions, {"iou": the fit's mean intersection over union below the chin, "frames": n})."""
    if "torso" in rig.meta:
        raise InputError("fit_torso takes the head model without a torso")
    pick = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, min(FRAMES, len(frames)))]
    dtype = torch.float32
    K = torch.as_tensor(seq.K, dtype=dtype)
    viewmat = torch.as_tensor(seq.viewmat, dtype=dtype)
    K_work = K.clone()
    K_work[:2] *= WORK / float(seq.resolution)
    params = seq.params(device="cpu").slice(torch.tensor(pick))
    with torch.no_grad():
        heads = pose_vertices(rig, params)  # [B,V,3]
        chins = project_vertices(_chins(rig, heads), K_work, viewmat)[0][:, 1]  # [B] rows
    head_faces = rig.faces[rig.renderable_faces()]
    persons = torch.stack([_person(Path(masks_dir), f) for f in pick]) > 0.5  # [B,W,W]
    rows = torch.arange(WORK, dtype=dtype)[None, :, None] + 0.5
    below = rows > chins[:, None, None]  # [B,W,1] the torso's part of the picture
    heads_sil = torch.stack([rasterize_triangles(h, head_faces, K_work, viewmat, WORK, WORK, backfaces="draw").mask
                             for h in heads])
    base = neck_base(rig)  # the same for every candidate: made once
    length = _length(rig, base, params, seq, K, viewmat)
    scores = {}
    for width in WIDTHS:
        for drop in DROPS:
            shape = TorsoShape(float(width), drop, _chest(width), length)
            scores[(width, drop)] = _score(rig, base, shape, params, heads_sil, persons, below, K_work, viewmat)
    (width, drop), iou = _choose(scores)
    best = TorsoShape(float(width), drop, _chest(width), length,
                      fall_rings=max(6, round((length - drop - TorsoShape.rounding) / FALL_BAND)))
    return best, {"iou": round(float(iou), 4), "frames": len(pick), "searched": len(scores),
                  "warnings": framing_warnings(persons.numpy(), heads_sil.numpy())}


def _head_and_below(head: np.ndarray) -> np.ndarray:  # [W,W] bool -> [W,W] bool
    """The head's silhouette and the columns it spans below it (where its own body is, joined or not)."""
    out = head.copy()
    rows, cols = np.nonzero(head)
    if len(rows):
        out[rows.max():, cols.min():cols.max() + 1] = True
    return out


def framing_warnings(persons: np.ndarray, heads: np.ndarray) -> list[str]:
    # persons, heads: [B,W,W] bool person masks and the rig's head silhouettes of the fitted frames
    """What in the person masks makes a portrait worse, with the advice: a second person, shoulders the frame cuts."""
    import cv2

    out = []
    second = 0
    for person, head in zip(persons, heads):
        count, labels, stats, _ = cv2.connectedComponentsWithStats(person.astype(np.uint8), connectivity=8)
        ours = set(np.unique(labels[_head_and_below(head) & person]).tolist()) - {0}
        others = [stats[i, cv2.CC_STAT_AREA] for i in range(1, count) if i not in ours]
        second += bool(others) and max(others) > SECOND_PERSON_SHARE * person.size
    if second > len(persons) // 2:
        out.append("someone else is in the picture beside the person: they become part of the room or of the "
                   "torso; film the person alone")
    lower = persons[:, persons.shape[1] // 2:]
    if lower[:, :, 0].any(axis=1).mean() > 0.5 and lower[:, :, -1].any(axis=1).mean() > 0.5:
        out.append("the shoulders leave the frame on both sides, so their width is a guess (seen from the side a "
                   "turned camera may show them too wide or too narrow); frame a little wider for a portrait")
    return out


def _chest(width: float) -> float:
    return float(np.clip(CHEST_PER_WIDTH * float(width), *CHEST_RANGE))


def _choose(scores: dict) -> tuple[tuple[float, float], float]:
    """The candidate nearest the average adult among those within IOU_TOLERANCE of the best: where the frame cuts
    the shoulders off, many fit alike and the silhouette cannot tell them apart."""
    best = max(scores.values())
    near = [key for key, value in scores.items() if value >= best - IOU_TOLERANCE]
    default = TorsoShape()
    key = min(near, key=lambda k: ((k[0] - default.shoulder_width) / 0.1) ** 2 + ((k[1] - default.shoulder_drop) / 0.04) ** 2)
    return key, scores[key]


def _score(rig: HeadRig, base, shape: TorsoShape, params, heads_sil, persons, below, K_work, viewmat) -> float:
    """Mean IoU below the chin of (head silhouette ∪ torso silhouette) with the person mask."""
    with_torso = attach_torso(rig, shape, base)
    torso = with_torso.region("torso")
    faces = with_torso.faces[rig.num_faces:]
    ious = []
    with torch.no_grad():
        verts = pose_vertices(with_torso, params)[:, torso]  # [B,N,3] the torso only (it starts after the rig)
        for b in range(verts.shape[0]):
            sil = rasterize_triangles(verts[b], faces - rig.num_vertices, K_work, viewmat, WORK, WORK,
                                      backfaces="draw").mask | heads_sil[b]
            inter = (sil & persons[b] & below[b]).sum()
            union = ((sil | persons[b]) & below[b]).sum()
            ious.append(float(inter) / max(1.0, float(union)))
    return float(np.mean(ious))


def describe(shape: TorsoShape, info: dict) -> str:
    d = dataclasses.asdict(shape)
    return (f"shoulders {d['shoulder_width'] * 100:.0f} cm wide, dropping {d['shoulder_drop'] * 100:.0f} cm; "
            f"silhouette overlap {info['iou']:.2f}")

