"""The viewer's web server: one viser server, one `Session` + `Panel` per connected tab."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from avatar3d_viewer.camera_map import SCENE_SCALE
from avatar3d_viewer.session import RenderSettings, Session
from avatar3d_viewer.sources import Sources

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_host(host: str) -> Optional[str]:
    """The warning to print when `host` exposes the viewer beyond this machine (the caller prints it, once)."""
    if host in LOCAL_HOSTS:
        return None
    text = (f"the viewer listens on {host}: anyone who can reach this machine can open it, see the avatar and "
            f"upload files into its folder; use the default --host 127.0.0.1 (and an SSH tunnel) unless you "
            f"mean to share it")
    return text


class ViewerApp:
    """Serve `avatar` (an `avatar3d.api.Avatar` loaded from `avatar_dir`) to browsers at http://host:port."""

    def __init__(self, avatar, avatar_dir: Path, *, host: str = "127.0.0.1", port: int = 8080,
                 settings: Optional[RenderSettings] = None, max_upload_bytes: int = 50 * 2**20,
                 verbose: bool = False):
        import viser

        self.avatar = avatar
        self.avatar_dir = Path(avatar_dir)
        self.settings = settings or RenderSettings()
        self.max_upload_bytes = int(max_upload_bytes)
        self.sources = Sources(avatar, self.avatar_dir)
        self.sessions: dict[int, Session] = {}
        self._lock = threading.Lock()
        self.server = viser.ViserServer(host=host, port=port, label="avatar3d", verbose=verbose)
        self.server.scene.set_up_direction("+y")  # rig space: y up
        cam = self.server.initial_camera
        cam.look_at = (0.0, 0.0, 0.0)
        cam.position = (0.0, 0.0, float(avatar.enrolled_distance) * SCENE_SCALE)
        cam.up = (0.0, 1.0, 0.0)
        cam.fov = float(avatar.default_fov) * 3.141592653589793 / 180.0
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def port(self) -> int:
        return int(self.server.get_port())

    @property
    def url(self) -> str:
        host = self.server.get_host()
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{self.port}"

    def _connect(self, client) -> None:
        from avatar3d_viewer.panel import Panel

        session = Session(self.avatar, self.sources, self.settings, client=client)
        session.tabs = lambda: len(self.sessions)
        d = float(self.avatar.enrolled_distance) * SCENE_SCALE
        client.camera.near = 0.01
        try:  # keep the zoom in a sensible range around the enrolled distance
            client.camera.min_orbit_distance = 0.3 * d
            client.camera.max_orbit_distance = 3.0 * d
        except Exception:  # older viser: no dolly limits
            pass
        session.panel = Panel(session, client, self.avatar_dir, self.max_upload_bytes)
        with self._lock:
            self.sessions[client.client_id] = session
        session.aspect = float(getattr(client.camera, "aspect", 1.0) or 1.0)
        session.start()

    def _disconnect(self, client) -> None:
        with self._lock:
            session = self.sessions.pop(client.client_id, None)
        if session is not None:
            session.close()

    def stop(self) -> None:
        with self._lock:
            sessions = list(self.sessions.values())
            self.sessions.clear()
        for session in sessions:
            session.close()
        for session in sessions:  # let frames in flight finish before the interpreter exits
            session.close(wait=10.0)
        self.server.stop()
