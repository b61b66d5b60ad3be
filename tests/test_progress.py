"""Progress output: a few plain lines when stderr is a log file, not one per update."""
import io

from avatar3d.progress import LogProgress, progress_bar


def test_a_log_gets_a_line_per_tenth_not_per_update():
    log = io.StringIO()
    with progress_bar(6000, "train gaussians", unit="step", file=log) as bar:
        assert isinstance(bar, LogProgress)
        for step in range(6000):
            bar.update(1)
            if step % 100 == 0:
                bar.set_postfix(loss=f"{1.0 / (step + 1):.3f}")
    lines = log.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines  # start, 10 %, ..., 90 %, done
    assert lines[0].startswith("train gaussians: started (6000 step")
    assert "done, 6000 step" in lines[-1]
    assert any("50 %" in line for line in lines)


def test_resumed_and_unknown_totals_still_say_where_they_are():
    log = io.StringIO()
    bar = progress_bar(100, "masks", unit="frame", initial=40, file=log)
    bar.update(60)
    bar.close()
    bar.close()  # twice is harmless
    lines = log.getvalue().splitlines()
    assert "from 40" in lines[0] and len(lines) == 2
    log = io.StringIO()
    with progress_bar(None, "decode", unit="frame", file=log) as bar:
        bar.update(5)
    assert log.getvalue().splitlines()[-1].startswith("decode: done, 5 frame")


def test_disabled_bars_print_nothing():
    log = io.StringIO()
    with progress_bar(10, "render", file=log, disable=True) as bar:
        bar.update(10)
    assert log.getvalue() == ""
