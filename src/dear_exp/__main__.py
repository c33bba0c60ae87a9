"""`python -m dear_exp [+experiment=NAME] [overrides]`: one Hydra entry point for every task."""

from __future__ import annotations

import errno
import importlib.resources
import logging
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dear_exp.errors import DearError, Terminated, one_line

# the configs ship inside the package (conf/ at the top of a checkout links here), so an installed
# dear-exp finds them from any directory
CONF_DIR = str(importlib.resources.files("dear_exp") / "conf")
log = logging.getLogger("dear_exp")


def _sweep_group() -> str:
    """W&B group: the multirun's folder name, so a sweep's runs sit together; `single` otherwise."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    return Path(hc.sweep.dir).name if hc.mode == RunMode.MULTIRUN else "single"


def _sweep_job() -> str:
    """W&B run name's tail: in a multirun the job number and the values this job gives the swept keys
    ("3-prune.alpha_low=0.2,prune.alpha_high=0.9"), else the run folder's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return Path(hc.run.dir).name
    varied = varied_overrides(list(hc.overrides.task), _swept_keys(hc))
    return f"{hc.job.num}-{varied}" if varied else str(hc.job.num)


def _swept_keys(hc: Any) -> set[str]:
    """The keys a multirun sweeps: a sweep file's `hydra.sweeper.params`, and the command line's sweep
    overrides (a,b / range() / choice()), from the `multirun.yaml` Hydra writes before any job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set((hc.sweeper.get("params") or {}).keys())
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        overrides = list(OmegaConf.load(saved).hydra.overrides.task)
        keys |= {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()}
    return keys


def varied_overrides(job: list[str], swept: set[str], limit: int = 120) -> str:
    """This job's `key=value` overrides of the swept keys, in command-line order, at most `limit` characters."""
    parts = [o.lstrip("+~") for o in job if o.lstrip("+~").split("=", 1)[0] in swept]
    text = ",".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cores() -> int:
    """The cores this process may use (its CPU affinity: a SLURM allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def demo_version() -> int:
    """The embedded demo's data version: in its base detector's file name, so a base trained on an
    older build is never reused on a newer one."""
    from dear_exp.demo.writer import VERSION

    return VERSION


def demo_folder(scale: str, seed: int, texture: float) -> str:
    """The demo build's folder name (`demo.writer.folder_name`)."""
    from dear_exp.demo.writer import folder_name

    return folder_name(scale, int(seed), float(texture))


def register_resolvers() -> None:
    resolvers = (
        ("sweep_group", _sweep_group),
        ("sweep_job", _sweep_job),
        ("cwd", os.getcwd),
        ("cores", cores),
        ("demo_version", demo_version),
        ("demo_folder", demo_folder),
    )
    for name, fn in resolvers:
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    cache_interpolation_parses()


def cache_interpolation_parses() -> None:
    """OmegaConf (2.3) parses an interpolation's text (`${paths.output_dir}/.partial`) with its ANTLR
    grammar every time the value is read, and has no setting to keep the parse: resolving this
    project's config takes 22 ms, 5 ms with each text parsed once (issue 15: a sweep job reads the
    config several times). The parse tree depends on the text alone and resolving only reads it, so
    the grammar's `parse` is memoised where OmegaConf's nodes call it; a failed parse raises each time,
    as before. tests/test_configs.py checks every config resolves the same with and without it."""
    import functools

    import omegaconf.base
    from omegaconf import grammar_parser

    if omegaconf.base.parse is grammar_parser.parse:
        omegaconf.base.parse = functools.lru_cache(maxsize=4096)(grammar_parser.parse)


class _DropTips(logging.Filter):
    """Lightning's advertisements and its reports of hardware this machine does not have."""

    NOISE = ("Tip: For seamless cloud logging", "TPU available: False", "HPU available: False")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in record.getMessage() for n in self.NOISE)


def quiet_libraries() -> None:
    """Lightning's own console handler would print every line twice beside Hydra's; its tips and
    warnings about things this project does on purpose are noise (`quiet_notes`)."""
    import lightning  # noqa: F401  (its import adds its own console handlers: removed below, once it has)

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True  # through Hydra's handlers only: each line once, in one format
    quiet_notes()


def quiet_notes() -> None:
    """Lightning's tips, and the libraries' warnings about what this project does on purpose (frozen
    eval-mode detector, size buckets): for the CLI and for `dear_exp.api` in a notebook, whose own
    logging is left as it is. Each filter once, however often called."""
    import warnings

    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    # each filter names one warning (message, category, the module that emits it); anything else shows.
    # Lightning's PossibleUserWarning is a UserWarning: matching that spares importing Lightning here.
    # the detector is frozen in eval mode on purpose (BatchNorm statistics stay); only the head trains
    warnings.filterwarnings(
        "ignore", r".*module\(s\) in eval mode at the start of training", UserWarning, r"lightning\.pytorch\.loops"
    )
    # our batch samplers return every index (extract() checks each row exactly once)
    warnings.filterwarnings(
        "ignore",
        r".*custom batch sampler `(SizeBucketBatchSampler|StackedBatches|ShardedBatches)` for prediction",
        UserWarning,
        r"lightning\.pytorch\.utilities\.data",
    )
    # Lightning 2.6's own pytree helper still builds torch's deprecated LeafSpec: nothing we call
    warnings.filterwarnings(
        "ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning, r"lightning\.pytorch\.utilities\._pytree"
    )
    # num_workers=auto already takes one worker per core (at most 8): a smaller value is set on purpose
    warnings.filterwarnings(
        "ignore", r".*does not have many workers", UserWarning, r"lightning\.pytorch\.trainer\.connectors"
    )
    # diffusers 0.42 still passes local_dir_use_symlinks to huggingface_hub 2.x, which ignores it
    warnings.filterwarnings(
        "ignore", r"The `local_dir_use_symlinks` argument is deprecated", UserWarning, r"huggingface_hub\.utils"
    )


def set_threads(threads: int) -> None:
    """torch's CPU threads, set from the config: float results on the CPU depend on them. Exported
    as OMP_NUM_THREADS too, so that ranks Lightning starts inherit them (it would pick its own)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU thread(s) (`threads`: recorded in the run identity and the feature cache key)", threads)


# where runs write (key, a folder?): checked before any work, so a run never fails at its end on them
DESTINATIONS = (
    ("paths.output_dir", True),
    ("paths.cache_dir", True),
    ("cache.dir", True),
    ("task.output", False),
    ("task.dst", True),
)


def check_destinations(cfg: DictConfig) -> None:
    from dear_exp.files import require_writable

    for key, folder in DESTINATIONS:
        value = OmegaConf.select(cfg, key, default=None)
        if value not in (None, "", "???"):
            require_writable(str(value), key, folder)


def write_config(cfg: DictConfig) -> Path:
    """The whole config, resolved (every value the run uses, interpolations filled in), to
    `config.yaml` in the run dir: the printed truth of the run, kept off the console."""
    from dear_exp.files import write_atomic

    path = Path(cfg.paths.output_dir) / "config.yaml"
    if _is_rank_zero():
        write_atomic(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path


def run_summary(cfg: DictConfig, config: Path) -> str:
    """What the console shows of the config: the overrides given and the few settings a reader needs."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    task = cfg.task.name
    lines = [f"task={task}  overrides: {' '.join(overrides) if overrides else '(none)'}"]
    if "detector" in cfg and task in ("dear", "dear_grid", "evaluate", "predict", "train_base", "cache", "fragility"):
        lines.append(f"detector {cfg.detector.name} ({cfg.detector.checkpoint}), layer {_layer(cfg)}")
    if task in ("dear", "dear_grid", "evaluate", "cache", "census", "fragility"):
        lines.append(
            f"benchmark {cfg.benchmark.name} ({cfg.benchmark.root}), post-processing {', '.join(cfg.postprocess.settings)}"
        )
    if task in ("dear", "dear_grid"):
        p, h = cfg.prune, cfg.head
        levels = (
            f"{p.alpha_low}/{p.alpha_high}"
            if task == "dear"
            else f"alpha_low {p.alpha_low} x alpha_high {p.alpha_high}"
        )
        lines.append(f"prune {p.mode} {levels}, head {h.solver} ({h.mode}, init {h.init})")
    lines.append(f"seed {cfg.seed}, threads {cfg.threads}; the whole config: {config}")
    return "\n  ".join(lines)


def _layer(cfg: DictConfig) -> str:
    net = cfg.detector.net
    return str(net.get("feature_layer", net.get("block", "?")))


def _is_rank_zero() -> bool:
    """Rank 0 moves a run's artefacts into place. Lightning's own rank from the launch environment
    (RANK, LOCAL_RANK, SLURM_PROCID, ...), known before the process group exists."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def run_task(cfg: DictConfig) -> dict[str, Any]:
    from dear_exp import schema
    from dear_exp.build import finish_wandb
    from dear_exp.tasks import (
        cache,
        census,
        compare,
        dear,
        dear_grid,
        evaluate,
        export,
        fragility,
        make_inpaint,
        predict,
        train_base,
    )

    tasks = {
        "dear": dear.run,
        "dear_grid": dear_grid.run,
        "evaluate": evaluate.run,
        "train_base": train_base.run,
        "compare": compare.run,
        "predict": predict.run,
        "census": census.run,
        "make_inpaint": make_inpaint.run,
        "export": export.run,
        "cache": cache.run,
        "fragility": fragility.run,
    }
    if cfg.task.name not in tasks:
        raise DearError(f"task={cfg.task.name} is not one of {', '.join(tasks)}")
    schema.validate(cfg)  # an impossible value stops the run in one line, before the config is printed
    check_destinations(cfg)
    log.info("%s", run_summary(cfg, write_config(cfg)))
    set_threads(cfg.threads)
    from dear_exp import memory

    log.info("%s", memory.configure(schema.build(cfg.memory, "memory")))
    from dear_exp.files import staged

    try:
        with staged(Path(cfg.paths.work_dir), Path(cfg.paths.output_dir), owner=_is_rank_zero()):
            result = tasks[cfg.task.name](cfg)
            raise_if_stopped()
    except BaseException:
        finish_wandb(failed=True)
        raise
    finish_wandb()
    return result


# what an OSError's errno means for the user, and what to do about it
_OS_FIXES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free space there, or point that path at a larger disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space there, or point that path at another disk"),
    errno.EACCES: ("permission denied", "choose a location you can write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to, or fix its permissions"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "remove that file or choose another path"),
    errno.EEXIST: ("a file is in the way", "remove it or choose another path"),
    errno.EISDIR: ("is a folder, not a file", "give the path of a file"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter path"),
}


def os_message(exc: OSError) -> str:
    """One line for a file-system error: what happened, on which path, how to fix it."""
    what, fix = _OS_FIXES.get(exc.errno or -1, (exc.strerror or type(exc).__name__, "check the path and the disk"))
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p)
    return f"{what}: {where or one_line(exc)}; {fix}"


def full_disk(cfg: DictConfig) -> str | None:
    """The folder among the run's own (output, cache) whose disk is full: a writer that is not an
    OSError (torch.save's RuntimeError, safetensors' error) still fails for that reason."""
    for key in ("paths.output_dir", "cache.dir", "paths.cache_dir"):
        path = OmegaConf.select(cfg, key, default=None)
        folder = Path(str(path)) if path else None
        while folder is not None and not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder is not None and shutil.disk_usage(folder).free < 1 << 20:
            return f"{key}={path}"
    return None


def user_message(exc: BaseException, cfg: DictConfig | None = None) -> str | None:
    """The one line for errors a user (or the file system) causes; None for anything else (a bug)."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(exc, DearError):
        return one_line(exc)
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", "") or str(exc).split("full_key:")[-1].split()[0]
        return f"{key} must be set (it is ??? in the config): add {key}=... to the command"
    if isinstance(exc, InstantiationException):
        cause = exc.__cause__ or exc
        return f"cannot build {type(cause).__name__}: {one_line(cause)}; check the config group's values"
    if isinstance(exc, OSError) and exc.errno is not None:
        return os_message(exc)
    killed = re.search(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.]+)", str(exc))
    if isinstance(exc, RuntimeError) and killed:
        return (
            f"a data-loading worker (pid {killed[1]}) was killed by signal: {killed[2]} (from outside, or by the "
            "kernel when memory ran out: dmesg says which); run again, with a smaller batch size or num_workers=0 "
            "if memory ran out"
        )
    full = full_disk(cfg) if cfg is not None else None
    if full is not None:
        return f"no space left on the device of {full} ({type(exc).__name__}: {one_line(exc)[:200]}); free space there"
    return None


def composition_message(exc: BaseException) -> str:
    """Hydra's composition errors (unknown option, misspelt key, bad override) in one line, keeping
    the list of valid options."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if "Config search path:" in lines:
        lines = lines[: lines.index("Config search path:")]
    head, options = [], []
    for line in lines:
        (options if options or line.startswith("Available options") else head).append(line)
    text = " ".join(head).removeprefix("In 'main': ")
    unknown = _unknown_key(exc, text)
    if unknown is not None:
        return unknown
    override = getattr(exc, "override", None)
    if type(exc).__name__ == "OverrideParseException":
        bad = override or next((a for a in sys.argv[1:] if "[" in a or "(" in a or "{" in a), None)
        text = f"cannot parse the override{f' {bad}' if bad else ''}: {text}"
    if options:
        text += f"; {options[0].rstrip(':').lower()}: {', '.join(options[1:])}"
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({one_line(cause).split(' full_key:')[0]})"
    return text


def _unknown_key(exc: BaseException, text: str) -> str | None:
    """Hydra's "Could not override 'prune.alpah_low'" as what it means: a group has no such setting; its
    settings, and the typed key with the nearest one in its place, named (Hydra suggests `+key=`, which
    adds the misspelt key as a new one). None where the missing key's parent is not a group of
    settings (`prune.alpha_low.x`: Hydra's message stands)."""
    import difflib

    cause = exc.__cause__
    parent = getattr(cause, "parent_node", None)
    typed = re.match(r"Could not override '([^']+)'", text)
    if typed is None or not isinstance(parent, DictConfig):
        return None
    known = [str(k) for k in parent.keys() if not str(k).startswith("_")]
    if not known:
        return None
    key, full, typed_key = str(getattr(cause, "key", "")), str(getattr(cause, "full_key", "")), typed.group(1)
    where = full.rpartition(".")[0]
    line = f"{full} is not a setting of {where}" if where else f"{full} is not a top-level setting"
    if typed_key != full:
        line = f"{typed_key}: {line}"
    close = difflib.get_close_matches(key, known, n=1)
    if close:  # the typed key with the nearest setting in the unknown one's place
        line += f": did you mean {typed_key.replace(full, f'{where}.{close[0]}' if where else close[0], 1)}?"
    listed = f"its settings: {', '.join(known)}" if where else "python -m dear_exp --cfg job lists them all"
    return f"{line} ({listed}; to add a new key on purpose: +{typed_key}=...)"


class Stopped(SystemExit):
    """How the entry point ends a run stopped by a signal: exit code 128 + the signal's number for
    in-process callers (tests, notebooks, job_costs.py); `cli()` then dies of the signal itself, so that
    a shell loop stops on Ctrl-C and SLURM's accounting reads a signal, as for any killed process."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class _Stop:
    """The first SIGTERM of a run (`sigterm_raises`): later ones only wait for the cleanup it started."""

    signum: int | None = None
    child: Any = signal.SIG_DFL  # the SIGCHLD handler the stop replaced


# what stopped a run (the class `stopped_as` answers): its signal, and the words for it
STOPS: dict[type[BaseException], tuple[int, str]] = {
    Terminated: (signal.SIGTERM, "stopped by SIGTERM"),
    KeyboardInterrupt: (signal.SIGINT, "interrupted (Ctrl-C)"),
}


def stopped_as(exc: BaseException) -> type[BaseException] | None:
    """Terminated or KeyboardInterrupt when `exc` ends a run stopped by a signal, else None: those two;
    whatever surfaced after this process's SIGTERM (a DataLoader worker killed by the same signal, as a
    group kill or SLURM sends, raises its own error while the stop unwinds); Lightning's own ends of
    them: after a SIGTERM its SIGTERMException (a SystemExit whose code is None, which would end the
    process with 0), after a Ctrl-C in its loops `sys.exit(1)` (which would read as a bug's exit code)."""
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt
    if isinstance(exc, Terminated) or _Stop.signum is not None:
        return Terminated
    return _lightning_stop(exc)


def _lightning_stop(exc: BaseException) -> type[BaseException] | None:
    """What Lightning's SystemExit stands for: Terminated, KeyboardInterrupt, or None (neither)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return Terminated
    if isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt):
        return KeyboardInterrupt
    return None


def raise_if_stopped() -> None:
    """Before a run's outputs are published: a SIGTERM whose Terminated something swallowed (a
    `__del__`, a GC callback) or that only Lightning noted (a distributed run) still stops the run."""
    if _Stop.signum is not None:
        raise Terminated


def _distributed() -> bool:
    dist = sys.modules.get("torch.distributed")
    return bool(dist and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the CLI runs, its process's first SIGTERM raises Terminated where the run is: Lightning's
    trainers install their own handler, which only notes the signal (their fit loop then exits with code
    0, their predict loop never looks) and calls the one it found installed, this one. Later SIGTERMs
    are ignored while the first one's cleanup runs. In a distributed run the signal is only noted
    (Lightning stops every rank together at a step's end; a rank raising alone would leave the others
    waiting in a collective), and `raise_if_stopped` stops the run before it publishes. A forked child
    (a fork pool's worker) dies of the signal as before. The handler found is put back at the end."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set one
        yield
        return
    main_pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if _Stop.signum is not None:
            return
        _Stop.signum = signum
        # DataLoader workers killed by the same signal (a group kill, SLURM) would make torch's SIGCHLD
        # handler raise, and its iterators' __del__ print tracebacks, while the stop unwinds
        _Stop.child = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if not _distributed():
            raise Terminated

    _Stop.signum = None
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if _Stop.signum is not None:  # the SIGCHLD handler found at the stop (torch's, or none) back
            signal.signal(signal.SIGCHLD, _Stop.child)
        _Stop.signum = None


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="main")
def main(cfg: DictConfig) -> None:
    from dear_exp.memory import set_huge_pages

    set_huge_pages(cfg.memory.huge_pages is True)  # torch reads its switch once, when imported: first
    quiet_libraries()
    try:
        run_task(cfg)
    except BaseException as exc:
        stop = stopped_as(exc)
        if stop is not None:  # into the run's log too; entry() prints the line
            log.error("%s", STOPS[stop][1])
            if isinstance(exc, stop):
                raise
            raise stop from None
        if not isinstance(exc, Exception):  # SystemExit from a library, a generator's exit: as they are
            raise
        _report(exc, cfg)
    log.info("Output: %s", cfg.paths.output_dir)


def _report(exc: Exception, cfg: DictConfig) -> None:
    """An error of the run: one line and exit 2 when the user can fix it, else a bug's traceback."""
    message = user_message(exc, cfg)
    if message is None:  # printed here, whole, so that nothing above can mistake it for an input error
        log.error(
            "unexpected %s: this is a bug in dear-exp, not in your input; please report it with the "
            "command and the traceback below",
            type(exc).__name__,
        )
        traceback.print_exc()
        sys.exit(1)
    log.error(message)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def entry() -> None:
    with sigterm_raises():
        _entry()


def _entry() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    # deterministic=true on CUDA needs a fixed cuBLAS workspace, or torch refuses the first matmul
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    register_resolvers()
    # Hydra prints its own composition errors over several lines and exits 1; raised to us instead, they
    # become one line and exit 2 like every other input error. A bug's traceback is printed whole.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        main()
    except (Terminated, KeyboardInterrupt) as exc:
        signum, what = STOPS[Terminated if isinstance(exc, Terminated) else KeyboardInterrupt]
        print(
            f"error: {what}: the run's unfinished outputs were not published; what finished steps wrote "
            "(earlier sweep jobs, feature-cache entries, exported or inpainted images) is kept, and the same "
            "command reuses it",
            file=sys.stderr,
        )
        raise Stopped(signum) from None
    except DearError as exc:  # a sweep's values, checked before its first job (hydra_plugins/dear_exp_sweeper)
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as exc:
        from hydra.errors import InstantiationException

        if isinstance(exc, InstantiationException):
            raise
        print(f"error: {composition_message(exc)}", file=sys.stderr)
        sys.exit(2)


def cli() -> None:
    """`python -m dear_exp` and `dear-exp`: the entry point, and a run stopped by a signal dies of it."""
    try:
        entry()
    except Stopped as stop:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(stop.signum, signal.SIG_DFL)
        os.kill(os.getpid(), stop.signum)
        raise  # not reached: the default action of SIGTERM and SIGINT ends the process


if __name__ == "__main__":
    cli()
