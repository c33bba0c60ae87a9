"""Running the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    *args: str, cwd: Path, timeout: int = 600, threads: int | None = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m dear_exp *args` in a clean environment, with `threads=1` unless args set threads
    (tests run two at a time on two cores); threads=None: the config's default."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "WANDB_", "PYTEST_", "DEAR_"))}
    clean.update({"WANDB_SILENT": "true", "OMP_NUM_THREADS": "1", **(env or {})})
    pinned = [f"threads={threads}"] if threads is not None and not any(a.startswith("threads=") for a in args) else []
    return subprocess.run(
        [sys.executable, "-m", "dear_exp", *args, *pinned],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line that says what is wrong."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, the file closed after reading."""
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_entry(args: list[str], cwd: Path, monkeypatch, capfd) -> tuple[int, str]:
    """The CLI's entry point in this process: (exit code, stdout + stderr); threads=1 and logger=none
    unless the case sets them."""
    import traceback

    from hydra.core.global_hydra import GlobalHydra

    from dear_exp.__main__ import entry

    GlobalHydra.instance().clear()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("DEAR_ROOT", raising=False)
    flags = [a for a in args if a.startswith("-")]  # -m, --cfg ...: before the overrides, as argparse wants
    overrides = [a for a in args if not a.startswith("-")]
    monkeypatch.setattr(sys, "argv", ["dear_exp", *flags, "threads=1", "logger=none", *overrides])
    capfd.readouterr()
    try:
        entry()
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # what a user would see as a bare traceback
        traceback.print_exc()
        rc = 1
    finally:
        GlobalHydra.instance().clear()
    out, err = capfd.readouterr()
    return rc, out + err


def wandb_exit_codes(folder: Path) -> list[int]:
    """The exit code each W&B offline run below `folder` recorded, read from its `.wandb` file (a
    LevelDB-format log of protobuf records after a 7-byte header; wandb 0.31 ships no Python reader)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    codes = []
    for path in sorted(folder.rglob("offline-run-*/*.wandb")):
        data, pos, block, pending = path.read_bytes(), 7, 32768, b""
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST; MIDDLE, LAST append
            if kind in (1, 4) and pending:
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                if record.WhichOneof("record_type") == "exit":
                    codes.append(record.exit.exit_code)
    return codes
