"""The message for a verb whose issue has not landed yet (the CLI exits non-zero with it)."""
from avatar3d.errors import NotYetAvailableError


def not_yet(what: str, issue: str) -> NotYetAvailableError:
    return NotYetAvailableError(
        f"{what} is not available yet: it lands with the issue '{issue}'. "
        "Run `avatar3d --help` to see what works today (`avatar3d demo`, `avatar3d models`, `avatar3d bench raster`)."
    )
