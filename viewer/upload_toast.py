"""The browser's upload toast says what happened to the file, not only that its bytes arrived.

viser's upload button shows its own toast, "File uploaded successfully.", as soon as the transfer completes,
before the server has looked at the file; a refused upload kept that toast. viser gives that toast the id
"upload-<transfer uuid>" and sends the transfer uuid in its first message, so a tab's `UploadToasts` notes the
uuid and later replaces that toast with the verdict (stored, or refused and why). This uses viser's message
layer, which is not its public API: if that changes, the verdict is shown as a toast of its own instead.
"""
from __future__ import annotations

import threading
from typing import Optional


class UploadToasts:
    """Per tab: remembers the latest transfer of each upload button and replaces its toast."""

    def __init__(self, client):
        self.client = client
        self._latest: dict[str, str] = {}  # upload button uuid -> transfer uuid
        self._lock = threading.Lock()
        try:
            from viser import _messages

            client._websock_connection.register_handler(_messages.FileTransferStartUpload, self._on_start)
            self._hooked = True
        except Exception:  # another viser: fall back to toasts of our own
            self._hooked = False

    def _on_start(self, client_id, message) -> None:
        with self._lock:
            self._latest[message.source_component_uuid] = message.transfer_uuid

    def transfer_of(self, button_uuid: str) -> Optional[str]:
        with self._lock:
            return self._latest.get(button_uuid)

    def verdict(self, button_uuid: str, title: str, body: str, ok: bool) -> None:
        """Replace the upload toast of `button_uuid`'s latest transfer (or add one) with the verdict."""
        color = None if ok else "red"
        auto_close = 6.0 if ok else None  # a refusal stays until closed: it says what to do
        transfer = self.transfer_of(button_uuid) if self._hooked else None
        if transfer is not None:
            try:
                from viser import _messages

                props = _messages.NotificationProps(title=title, body=body, loading=False, with_close_button=True,
                                                    auto_close_seconds=auto_close, color=color)
                self.client._websock_connection.queue_message(
                    _messages.NotificationUpdateMessage(f"upload-{transfer}", props))
                return
            except Exception:  # fall through to a toast of our own
                pass
        self.client.add_notification(title, body, with_close_button=True, auto_close_seconds=auto_close,
                                     color=color)
