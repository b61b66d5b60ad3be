"""`avatar3d enroll`: the whole pipeline, from a talking video to an avatar."""
from __future__ import annotations

from avatar3d.pipeline.config import EnrollConfig

__all__ = ["EnrollConfig", "main"]


def main(cfg: EnrollConfig) -> int:
    from avatar3d.errors import Avatar3DError
    from avatar3d.pipeline.enroll import print_summary, run_enrollment, staging_dir

    had_staging = staging_dir(cfg.out).exists()
    try:
        summary = run_enrollment(cfg)
    except Avatar3DError as err:
        if staging_dir(cfg.out).exists() and not had_staging:  # never leave a hidden folder unmentioned
            raise type(err)(f"{err}\nThe stages that finished are kept in {staging_dir(cfg.out).name} beside "
                            f"{cfg.out}: once fixed, the same command continues them; --restart discards "
                            "them") from err
        raise
    print_summary(summary, cfg.out)
    return 0
