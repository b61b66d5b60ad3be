"""A batch's summary: one line per finished job as it happens, and a table and a JSON file at the end."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from avatar3d.io.atomic import atomic_write_json

MESSAGE_WIDTH = 72  # the table's message column; the JSON keeps every message whole


def figure(result: dict) -> str:
    """A job's figure in words: an avatar's held-out PSNR, a clip's end-to-end frames per second."""
    if result.get("psnr") is not None:
        return f"{result['psnr']:.2f} dB"
    if result.get("fps") is not None:
        return f"{result['fps']:.1f} fps"
    return ""


def _seconds(result: dict) -> str:
    return "" if result.get("seconds") is None else f"{result['seconds']:.0f} s"


def job_line(result: dict, done: int, total: int) -> str:
    """The line printed when a job finishes (or is skipped)."""
    parts = [f"[{done}/{total}]", f"{result['status']:<7}", f"{result['kind']} {result['job']}"]
    detail = ", ".join(p for p in (_seconds(result), figure(result)) if p)
    if detail:
        parts.append(f"({detail})")
    if result.get("message"):
        parts.append(f"- {result['message']}")
    return " ".join(parts)


def table(results: list[dict]) -> str:
    """The summary table: job, status, seconds, figure, message."""
    rows = [("job", "status", "seconds", "figure", "message")]
    for r in results:
        message = (r.get("message") or "").replace("\n", " ")
        if len(message) > MESSAGE_WIDTH:
            message = message[:MESSAGE_WIDTH - 3] + "..."
        rows.append((r["job"], r["status"], _seconds(r), figure(r), message))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [" | ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]]).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths) + "-+-" + "-" * 7)
    return "\n".join(lines)


def counts(results: list[dict]) -> dict:
    return {status: sum(r["status"] == status for r in results)
            for status in ("done", "skipped", "failed", "cancelled")}


def write_json(path: Path, kind: str, results: list[dict], *, wall_s: float, ray_start_s: Optional[float],
               settings: dict) -> Path:
    """The batch's record: every job's result, the counts, the wall time and Ray's start-up time."""
    return atomic_write_json(path, {"batch": kind, **counts(results), "wall_s": round(wall_s, 1),
                                    "ray_start_s": None if ray_start_s is None else round(ray_start_s, 2),
                                    "settings": settings, "jobs": results})
