"""`avatar3d view AVATAR`: the interactive viewer in the browser (a local web server)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro


@dataclass
class ViewConfig:
    avatar: tyro.conf.Positional[Path]
    """The avatar directory to view (made by `avatar3d enroll`)."""
    port: int = 8080
    """Port of the web server (the next free one is taken when it is busy)."""
    host: str = "127.0.0.1"
    """Interface to bind; anything but 127.0.0.1 exposes the viewer to the network (a warning is printed)."""
    resolution: int = 512
    """Side of the rendered image once the view is still, pixels."""
    preview_resolution: int = 256
    """Side of the rendered image while the view moves (and during playback on a CPU), pixels."""
    settle: float = 0.3
    """Seconds without a change before the full-resolution frame is drawn."""
    backend: Literal["auto", "cuda", "cpu", "torch"] = "auto"
    """Rasterizer backend (auto: CUDA on a GPU, else the C++ extension, else the PyTorch reference)."""
    device: str = ""
    """Torch device for rendering (empty: cuda when available, else cpu)."""
    max_upload_mb: float = 50.0
    """Largest speech file a browser may upload, megabytes (uploads go to AVATAR/uploads/)."""


def main(cfg: ViewConfig) -> int:
    from avatar3d.api import Avatar
    from avatar3d.errors import InputError
    from avatar3d_viewer.app import ViewerApp, check_host
    from avatar3d_viewer.session import RenderSettings

    if not 32 <= cfg.preview_resolution <= cfg.resolution <= 4096:
        raise InputError(f"--preview-resolution {cfg.preview_resolution} and --resolution {cfg.resolution} must "
                         f"satisfy 32 <= preview <= resolution <= 4096 (e.g. 256 and 512)")
    if not 1 <= cfg.port <= 65535:
        raise InputError(f"--port {cfg.port} is not a TCP port; pick one in 1..65535 (e.g. 8080)")
    if not cfg.max_upload_mb > 0:
        raise InputError(f"--max-upload-mb {cfg.max_upload_mb} must be positive (e.g. 50)")
    warning = check_host(cfg.host)
    if warning:
        print(f"avatar3d view: warning: {warning}", file=sys.stderr)
    avatar = Avatar.load(cfg.avatar, device=cfg.device or None, backend=cfg.backend)
    on_gpu = str(avatar.device).startswith("cuda")
    settings = RenderSettings(resolution=cfg.resolution, preview_resolution=cfg.preview_resolution,
                              settle=cfg.settle, play_at_full=on_gpu)
    app = ViewerApp(avatar, cfg.avatar, host=cfg.host, port=cfg.port, settings=settings,
                    max_upload_bytes=int(cfg.max_upload_mb * 2**20))
    print(f"avatar3d view: {cfg.avatar} ({avatar.num_gaussians} Gaussians, {avatar.device}) at {app.url} "
          f"(Ctrl+C to stop)", flush=True)
    _stop_on_sigterm()
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        app.stop()
    return 0


def _stop_on_sigterm() -> None:
    """A service manager's SIGTERM ends the viewer as cleanly as Ctrl+C does."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
