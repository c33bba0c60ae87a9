"""A run stopped by SIGTERM (kill, timeout) or Ctrl-C stops: inside Lightning's loops, whose own handler
only notes SIGTERM, as outside them. One line, no result files, and the process dies of the signal."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dear_exp import __main__ as cli_module
from dear_exp.__main__ import raise_if_stopped, sigterm_raises
from dear_exp.errors import Terminated
from tests.helpers import run_cli

# the real console entry point, `cli()`, with a signal sent to this process as `kill` would from
# outside: at the first batch of one of Lightning's loops (argv[1]: a callback hook added to every
# trainer), or (argv[1] = "write_config") once the run has written its config.yaml, outside Lightning;
# argv[2]: the signal's name
SEND = """
import os, signal, sys
import lightning.pytorch as pl
import dear_exp.__main__ as m

where, signum = sys.argv[1], getattr(signal, sys.argv[2].removesuffix("-group"))


def send(*args, **kwargs):
    if sys.argv[2].endswith("-group"):  # this process and its DataLoader workers, as SLURM or kill -- -PGID do
        os.killpg(os.getpgrp(), signum)
    else:
        os.kill(os.getpid(), signum)


class Send(pl.Callback):
    def __init__(self):
        setattr(self, where, send)


init = pl.Trainer.__init__
pl.Trainer.__init__ = lambda self, *a, callbacks=None, **k: init(self, *a, callbacks=[*(callbacks or []), Send()], **k)
if where == "write_config":
    write = m.write_config
    m.write_config = lambda cfg: (write(cfg), send())[0]
sys.argv = ["dear_exp", *sys.argv[3:]]
m.cli()
"""


def _signalled(where: str, name: str, root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_", "PYTEST_", "DEAR_"))}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-c", SEND, where, name, "+debug=fdr", "threads=1", *overrides]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)


def _assert_stopped(proc: subprocess.CompletedProcess[str], root: Path, signum: int, what: str) -> None:
    assert proc.returncode == -signum, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {what}: the run's unfinished outputs were not published")
    assert what in proc.stdout  # the run's log says why it ended
    for name in ("results.csv", "scores.csv", "head.safetensors", "census.csv", ".partial"):
        assert not list((root / "logs").rglob(name)), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, task",
    [
        ("on_train_batch_start", "dear"),  # the demo detector's training, the run's first stage
        ("on_predict_batch_start", "evaluate"),  # scoring, after the checkpoint exists
        ("write_config", "census"),  # outside Lightning
    ],
)
def test_sigterm_stops_a_run(tiny_demo: Path, tmp_path: Path, where: str, task: str):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    if task == "evaluate":  # train the demo detector first, unstopped
        proc = run_cli("task=train_base", "+debug=fdr", cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _signalled(where, "SIGTERM", root, f"task={task}")
    _assert_stopped(proc, root, signal.SIGTERM, "stopped by SIGTERM")
    if where.startswith("on_"):
        assert "Received SIGTERM" in proc.stdout + proc.stderr  # Lightning's handler saw it first, then ours
    if task == "dear":  # the training stopped before its end: no checkpoint to mistake for a trained one
        assert not list((root / ".cache").rglob("*.pth"))


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_the_run_though_its_workers_die_of_it(tiny_demo: Path, tmp_path: Path):
    """The workers killed by the same signal raise their own error while the stop unwinds: still the stop."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    proc = _signalled("on_train_batch_start", "SIGTERM-group", root, "task=dear", "num_workers=2")
    _assert_stopped(proc, root, signal.SIGTERM, "stopped by SIGTERM")


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, task",
    [
        ("on_train_batch_start", "dear"),  # Lightning catches it and exits 1: still one line, SIGINT
        ("write_config", "census"),
    ],
)
def test_ctrl_c_is_one_line_and_dies_of_sigint(tiny_demo: Path, tmp_path: Path, where: str, task: str):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    proc = _signalled(where, "SIGINT", root, f"task={task}")
    _assert_stopped(proc, root, signal.SIGINT, "interrupted (Ctrl-C)")


def _child_killed_by_sigterm() -> None:
    pid = os.fork()
    if pid == 0:  # a forked child: dies of the signal, raises nothing (and never returns into pytest)
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status


def test_sigterm_raises_once_in_the_main_process_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_raises():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
        os.kill(os.getpid(), signal.SIGTERM)  # a second one, during the first one's cleanup: ignored
        with pytest.raises(Terminated):
            raise_if_stopped()  # and the run still ends as stopped before it publishes
        _child_killed_by_sigterm()
    assert signal.getsignal(signal.SIGTERM) is before
    raise_if_stopped()  # the next run in this process starts unstopped


def test_a_distributed_run_only_notes_sigterm_and_stops_before_publishing(monkeypatch):
    """Lightning stops every rank together; a rank raising alone would leave the others waiting."""
    monkeypatch.setattr(cli_module, "_distributed", lambda: True)
    with sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)  # noted, not raised
        with pytest.raises(Terminated):
            raise_if_stopped()


def test_after_a_sigterm_whatever_surfaces_is_the_stop():
    """A DataLoader worker killed by the same group kill raises its own RuntimeError while the stop
    unwinds (torch's SIGCHLD handler): once this process has had its SIGTERM, that is the stop too."""
    from dear_exp.__main__ import stopped_as

    worker = RuntimeError("DataLoader worker (pid 4242) is killed by signal: Terminated. ")

    def torchs(signum: int, frame: object) -> None:  # stands for torch's SIGCHLD handler
        raise RuntimeError("a worker died")

    before = signal.signal(signal.SIGCHLD, torchs)
    try:
        with sigterm_raises():
            assert stopped_as(worker) is None  # no SIGTERM here yet: a worker killed alone is an error of its own
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
            assert stopped_as(worker) is Terminated
            assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL  # dead workers raise nothing while it unwinds
        assert signal.getsignal(signal.SIGCHLD) is torchs  # and the handler is back for the next run
    finally:
        signal.signal(signal.SIGCHLD, before)
    assert stopped_as(worker) is None and stopped_as(KeyboardInterrupt()) is KeyboardInterrupt
