"""Record what a tab shows: its current sequence under its current controls, to AVATAR/recordings/.

The clip (H.264 + AAC when the sequence has sound) is written atomically by the media writer, with a JSON
of the controls beside it so the view can be reproduced (`avatar3d render` takes the same controls).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Optional

from avatar3d_viewer.state import ViewState, controls_summary, to_controls

RECORD_DIR = "recordings"
STILL_SECONDS = 2.0  # a still source is recorded for this long


def record_clip(avatar, params, state: ViewState, avatar_dir: Path, *, resolution: int, source: str = "",
                progress: Optional[Callable[[float], None]] = None, stop: Optional[Callable[[], bool]] = None
                ) -> Path:
    """Render every frame of `params` (a DriveParams) with the tab's controls; returns the mp4's path.

    Named view-YYYYmmdd-HHMMSS.mp4, with -2, -3... when another recording (this tab's, another tab's or another
    viewer's) already has or holds that name.
    """
    from avatar3d.io.atomic import reserve_unique_path

    if len(params) == 1:
        params = avatar.neutral(int(round(STILL_SECONDS * params.fps)), fps=params.fps) \
            if params.source == "neutral" else params
    folder = Path(avatar_dir) / RECORD_DIR
    folder.mkdir(exist_ok=True)
    with reserve_unique_path(folder, f"view-{time.strftime('%Y%m%d-%H%M%S')}", ".mp4") as path:
        _write_recording(avatar, params, state, path, resolution, source, progress, stop)
    return path


def _write_recording(avatar, params, state: ViewState, path: Path, resolution: int, source: str,
                     progress: Optional[Callable[[float], None]], stop: Optional[Callable[[], bool]]) -> None:
    from avatar3d.io.atomic import atomic_write_text
    from avatar3d.io.media import Mp4Writer

    from avatar3d_viewer.frames import RENDERS, view_background

    controls = to_controls(state)
    background = view_background(avatar, state)
    total = len(params)
    meta = {"comment": f"made by avatar3d view ({source or params.source})"}
    with Mp4Writer(path, fps=params.fps, audio=params.audio, metadata=meta) as writer:
        for t in range(total):
            if stop is not None and stop():
                writer.abort()
                raise InterruptedError("recording stopped")
            frame = RENDERS.run(lambda: avatar.render_frame(params, t, controls=controls, resolution=int(resolution),
                                                            background=background, progress=t / max(1, total - 1)))
            writer.write(frame.image)
            if progress is not None:
                progress((t + 1) / total)
    record = {"source": source or params.source, "frames": total, "fps": params.fps, "resolution": int(resolution),
              "controls": controls_summary(state)}
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2))
