"""A run stopped by SIGTERM (kill, timeout, a cluster's pre-emption) stops: inside Lightning's loops,
whose own handler only notes the signal, as outside them. One line, exit code 143, no result files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dear_exp.__main__ import sigterm_raises
from dear_exp.errors import Terminated
from tests.helpers import run_cli

# the real CLI, with a Lightning callback added to every trainer that sends this process SIGTERM at
# the first batch of one loop (argv[1]: the callback hook), as `kill` would from outside
STOP_AT = """
import os, signal, sys
import lightning.pytorch as pl

hook = sys.argv[1]


class Stop(pl.Callback):
    def __init__(self):
        setattr(self, hook, lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGTERM))


init = pl.Trainer.__init__


def with_stop(self, *args, callbacks=None, **kwargs):
    init(self, *args, callbacks=[*(callbacks or []), Stop()], **kwargs)


pl.Trainer.__init__ = with_stop
sys.argv = ["dear_exp", *sys.argv[2:]]
from dear_exp.__main__ import entry

entry()
"""


def _stopped_at(hook: str, root: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_", "PYTEST_", "DEAR_"))}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-c", STOP_AT, hook, "+debug=fdr", "threads=1", *overrides]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _assert_stopped(proc: subprocess.CompletedProcess[str], root: Path) -> None:
    assert proc.returncode == 143, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: stopped by SIGTERM: the unfinished run's outputs were removed"), line
    assert "stopped by SIGTERM" in proc.stdout  # the run's log says why it ended
    for name in ("results.csv", "scores.csv", "head.safetensors", ".partial"):
        assert not list((root / "logs").rglob(name)), name


@pytest.mark.slow
@pytest.mark.parametrize(
    "hook, task",
    [
        ("on_train_batch_start", "dear"),  # the demo detector's training, the run's first stage
        ("on_predict_batch_start", "evaluate"),  # scoring, after the checkpoint exists
    ],
)
def test_sigterm_stops_a_run_inside_lightning(tiny_demo: Path, tmp_path: Path, hook: str, task: str):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    if task == "evaluate":  # train the demo detector first, unstopped
        proc = run_cli("task=train_base", "+debug=fdr", cwd=root)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _stopped_at(hook, root, f"task={task}")
    _assert_stopped(proc, root)
    assert "Received SIGTERM" in proc.stdout + proc.stderr  # Lightning's handler saw it first, then ours
    if task == "dear":  # the training stopped before its end: no checkpoint to mistake for a trained one
        assert not list((root / ".cache").rglob("*.pth"))


def test_sigterm_raises_only_in_the_main_process_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_raises(), pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
    assert signal.getsignal(signal.SIGTERM) is before
    with sigterm_raises():
        pid = os.fork()
        if pid == 0:  # a forked child (a DataLoader worker): dies of the signal, raises nothing
            os.kill(os.getpid(), signal.SIGTERM)
            os._exit(3)  # not reached
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM
