"""`avatar3d models install` and `avatar3d models list`: configs and entry points."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from avatar3d.errors import HeadModelError


@dataclass
class ModelsInstallConfig:
    """Convert a head model once and install it (cached) for every verb's --head-model."""

    ict: Optional[Path] = None
    """ICT-FaceKit folder: your clone of https://github.com/ICT-VGL/ICT-FaceKit (or its FaceXModel folder)."""
    flame: Optional[Path] = None
    """FLAME model file (.pkl, 2020/2023/2023 Open) downloaded from flame.is.tue.mpg.de."""
    flame_masks: Optional[Path] = None
    """Optional FLAME_masks.pkl (FLAME's vertex masks) to use for the regions (with --flame)."""
    flame_embedding: Optional[Path] = None
    """Optional FLAME landmark embedding (landmark_embedding.npy or mediapipe_landmark_embedding.npz), with --flame."""
    num_shape: Optional[int] = None
    """FLAME only: keep the first N identity components (default: all in the file)."""
    num_expr: Optional[int] = None
    """FLAME only: keep the first N expression components (default: all in the file)."""
    name: Optional[str] = None
    """Name to install under (default: 'ict' or 'flame'); pass it to other verbs as --head-model NAME."""
    force: bool = False
    """Convert again even when an up-to-date cached conversion exists."""


@dataclass
class ModelsListConfig:
    """List the installed head models."""

    json: bool = False
    """Print the list as JSON instead of a table."""
    expressions: Optional[str] = None
    """Print the expression names (the NAMEs of `render --expression NAME=VALUE`) of this model instead, e.g.
    `--expressions ict` (or `synthetic`)."""


def main_install(cfg: ModelsInstallConfig) -> int:
    from avatar3d.head import registry

    if (cfg.ict is None) == (cfg.flame is None):
        raise HeadModelError("pass exactly one of --ict DIR (ICT-FaceKit folder) or --flame FILE.pkl")
    if cfg.ict is not None and (cfg.flame_masks or cfg.flame_embedding or cfg.num_shape or cfg.num_expr):
        raise HeadModelError("--flame-masks, --flame-embedding, --num-shape and --num-expr apply to --flame only; "
                             "drop them for --ict")
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if cfg.ict is not None:
        info = registry.install_ict(cfg.ict, name=cfg.name or "ict", force=cfg.force, progress=say)
    else:
        info = registry.install_flame(cfg.flame, name=cfg.name or "flame", masks=cfg.flame_masks,
                                      embedding=cfg.flame_embedding, num_shape=cfg.num_shape,
                                      num_expr=cfg.num_expr, force=cfg.force, progress=say)
    s = info["summary"]
    print(f"installed {info['name']!r} ({info['kind']}): {s['vertices']} vertices, {s['triangles']} triangles, "
          f"{s['identity']} identity / {s['expressions']} expression shapes; jaw fit {_jaw_text(s.get('jaw_fit_mm'))}; "
          f"cache {registry.model_dir(info['name'])}")
    return 0


def _jaw_text(fit: Optional[dict]) -> str:
    if not fit:
        return "-"
    # at the fitted angle the corrective makes the fit exact; half-open shows how well the
    # rotation + corrective interpolates jawOpen, which is the figure that matters when driving
    text = f"{fit['mean']:.2f}/{fit['p95']:.2f} mm"
    if "half_open_vs_linear_mean" in fit:
        text += f", half-open {fit['half_open_vs_linear_mean']:.2f}/{fit['half_open_vs_linear_p95']:.2f}"
    if "skinning_only_mean" in fit:
        text += f" (skinning only {fit['skinning_only_mean']:.2f}/{fit['skinning_only_p95']:.2f})"
    return text


def format_table(rows: list[dict]) -> str:
    """The `models list` table (one row per model)."""
    head = ["name", "kind", "vertices", "triangles", "identity", "expressions", "jaw fit mean/p95", "cache"]
    body = []
    for r in rows:
        name = r["name"] + (" (default)" if r.get("default") else "")
        if r.get("status", "ok") != "ok":
            body.append([name, r.get("kind", "?"), "-", "-", "-", "-", r["status"], r.get("cache", "")])
            continue
        body.append([name, r["kind"], str(r["vertices"]), str(r["triangles"]), str(r["identity"]),
                     str(r["expressions"]), _jaw_text(r.get("jaw_fit_mm")), r["cache"]])
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def main_list(cfg: ModelsListConfig) -> int:
    import json

    from avatar3d.head import registry

    if cfg.expressions is not None:
        names = list(registry.load_rig(cfg.expressions, device="cpu").expr_names)
        print(json.dumps(names) if cfg.json else "\n".join(names))
        return 0
    rows = registry.list_models()
    if cfg.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no head models installed; {registry.INSTALL_HINT}. Built in: {registry.SYNTHETIC} (test head).")
        return 0
    print(format_table(rows))
    print(f"\nbuilt in: {registry.SYNTHETIC} (test head); models folder: {registry.models_dir()}")
    return 0
