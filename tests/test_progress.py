"""shrinkviz.core.progress: a normal bar on a terminal, a few plain lines anywhere else."""

from __future__ import annotations

import io
import sys

import pytest

from shrinkviz.core import progress
from shrinkviz.core.progress import LineProgress, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_fake_loop(stream, steps: int = 200, **kwargs) -> str:
    bar = progress_bar(steps, "fit", file=stream, **kwargs)
    for i in range(steps):
        bar.set_postfix(step=i)
        bar.update(1)
    bar.close()
    return stream.getvalue()


def test_a_log_gets_ten_lines_for_200_steps_and_no_carriage_return():
    out = run_fake_loop(io.StringIO())
    lines = out.splitlines()
    assert "\r" not in out
    assert len(lines) == 10
    assert [line.split(" [")[0] for line in lines] == [
        f"fit: {10 * k:3d}% {20 * k}/200" for k in range(1, 11)
    ]
    assert lines[-1].endswith("step=199]")


def test_line_count_does_not_grow_with_steps():
    assert len(run_fake_loop(io.StringIO(), steps=5000).splitlines()) == 10
    assert len(run_fake_loop(io.StringIO(), steps=3, lines=10).splitlines()) == 3  # one per step at most


def test_a_loop_stopped_early_or_without_total_writes_where_it_stopped():
    log = io.StringIO()
    with progress_bar(200, "fit", file=log) as bar:
        bar.update(55)
    # 55 steps in one update pass two milestones: one line, and close() has nothing newer to write
    assert [line.split(" [")[0] for line in log.getvalue().splitlines()] == ["fit:  28% 55/200"]
    log = io.StringIO()
    with progress_bar(200, "fit", file=log) as bar:
        bar.update(30)
        bar.update(5)
    assert [line.split(" [")[0] for line in log.getvalue().splitlines()] == [
        "fit:  15% 30/200",
        "fit:  18% 35/200",  # close() writes where it stopped
    ]
    log = io.StringIO()
    with progress_bar(None, "sweep", unit="run", file=log) as bar:
        bar.update(7)
    assert log.getvalue().startswith("sweep: 7run [") and log.getvalue().count("\n") == 1


def test_a_terminal_gets_a_tqdm_bar_redrawn_in_place():
    out = run_fake_loop(FakeTerminal(), leave=True)
    assert "\r" in out and "200/200" in out
    assert not isinstance(progress_bar(10, file=FakeTerminal()), LineProgress)


def test_jupyter_gets_the_auto_bar(monkeypatch):
    monkeypatch.setattr(progress, "_in_jupyter", lambda: True)
    assert not isinstance(progress_bar(10, file=io.StringIO()), LineProgress)


def test_disabled_writes_nothing_anywhere():
    for stream in (io.StringIO(), FakeTerminal()):
        assert run_fake_loop(stream, enabled=False) == ""


def test_stderr_that_is_not_a_terminal_is_the_default_stream(capsys):
    bar = progress_bar(4, "fit")
    bar.update(4)
    bar.close()
    err = capsys.readouterr().err
    assert err.startswith("fit: 100% 4/4") and "\r" not in err
    assert not sys.stderr.isatty()


def test_fit_writes_at_most_ten_lines_into_a_log(digits, capsys):
    from shrinkviz.loop.config import TrainConfig
    from shrinkviz.loop.train import fit
    from shrinkviz.models import create_model

    data = digits.subset(train=256, val=64, test=64)
    cfg = TrainConfig.preset("adam_fast").replace(epochs=2, batch_size=8)  # 64 steps
    fit(create_model("tiny_mlp", dataset=data), data, cfg, progress=True, stage="train")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [line.split(" [")[0] for line in err.splitlines()] == [
        f"train: {round(100 * s / 64):3d}% {s}/64" for s in (7, 13, 20, 26, 32, 39, 45, 52, 58, 64)
    ]


@pytest.mark.parametrize("lines", [0, -3])
def test_at_least_one_line(lines):
    assert len(run_fake_loop(io.StringIO(), steps=50, lines=lines).splitlines()) == 1
