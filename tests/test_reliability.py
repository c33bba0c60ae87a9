"""The reliability suite: every input a user can get wrong, table-driven. Each case is a command line
(and the files it needs), the exit code it must end with, a fragment of the one line it must print,
and then: no traceback, and no result-looking file left anywhere in the run folders.

The cases run in-process through the real entry point (`dear_exp.__main__.entry`, Hydra and all)
so that 70 of them take seconds; tests/test_errors.py runs the same kind through a subprocess.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import run_entry

# files a run writes as its results: none may be left by a failed run (logs and .hydra may)
RESULT_FILES = {
    "results.csv",
    "results.md",
    "rad_scores.csv",
    "dissection.safetensors",
    "head.safetensors",
    "refit.csv",
    "census.csv",
    "census.json",
    "compare.csv",
    "predictions.csv",
    "best.ckpt",
}


@dataclass
class Case:
    id: str
    args: list[str]
    fragment: str
    rc: int = 2
    setup: Callable[[Path], None] | None = None
    extra: list[str] = field(default_factory=list)


def _file(rel: str, data: bytes = b"x") -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    return make


def _folder(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).mkdir(parents=True, exist_ok=True)


def _torch_file(rel: str, obj: object) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, root / rel)

    return make


class _Code:
    def __reduce__(self):
        return (os.system, ("true",))


def _npr_state() -> dict[str, torch.Tensor]:
    from dear_exp.detectors.npr import NPR

    return NPR().state_dict()


def _wrong_keys(rel: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        state = _npr_state()
        state["fc.weight"] = state.pop("fc1.weight")
        _torch_file(rel, state)(root)

    return make


def _truncated(rel: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        _torch_file(rel, _npr_state())(root)
        (root / rel).write_bytes((root / rel).read_bytes()[:4096])

    return make


def _images(rel: str, *, float_image: bool = False, corrupt: bool = False) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "a.png")
        if float_image:
            Image.fromarray(rng.random((40, 40)).astype(np.float32)).save(folder / "f.tiff")
        if corrupt:
            good = folder / "a.png"
            (folder / "cut.png").write_bytes(good.read_bytes()[:120])

    return make


def _corrupt_benchmark_image(root: Path) -> None:
    victim = sorted((root / ".cache/demo/tiny-seed0/test/fake/gen_b").glob("*.png"))[1]
    victim.unlink()  # the demo folder is linked: replace the file, never write through the link
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


def _blank_mask(root: Path) -> None:
    victim = sorted((root / ".cache/demo/tiny-seed0/inpaint").glob("*_mask.png"))[0]
    size = Image.open(victim).size
    victim.unlink()  # a hard link to the shared demo: replace, never write through it
    Image.new("L", size, 0).save(victim)


NPR = ["task=evaluate", "+debug=default", "detector=npr"]
CKPT = "detector.checkpoint=ck/model.pth"

CASES = [
    # --- Hydra's own composition errors: one line, the valid options kept
    Case(
        "unknown-detector",
        ["detector=nope"],
        "Could not find 'detector/nope'; available options in 'detector': c2p_clip",
    ),
    Case("unknown-experiment", ["+experiment=nope"], "available options in 'experiment': cnnspot_flux"),
    Case("unknown-task", ["task=nope"], "available options in 'task': cache, census, compare, dear"),
    Case("unknown-prune", ["prune=both"], "available options in 'prune': bilateral, high, low"),
    Case("unknown-postprocess", ["postprocess=jpg"], "available options in 'postprocess': aigcdb"),
    Case("unknown-benchmark", ["benchmark=imagenet"], "available options in 'benchmark': aigcdetect"),
    Case("unknown-head", ["head=sgd"], "available options in 'head': default, reference"),
    Case(
        "misspelt-key",
        ["head.lrr=1"],
        "head.lrr is not a setting of head: did you mean head.lr? (its settings: solver,",
    ),
    Case(
        "misspelt-group-key",
        ["prune.alpha=0.2"],
        "prune.alpha is not a setting of prune: did you mean prune.alpha_low?",
    ),
    Case("unlike-any-key", ["prune.xyz=0.2"], "prune.xyz is not a setting of prune (its settings: mode, alpha_low,"),
    Case(
        "misspelt-group-in-key",
        ["prun.alpha_low=0.3"],
        "prun.alpha_low: prun is not a top-level setting: did you mean prune.alpha_low?",
    ),
    Case("key-below-a-value", ["prune.alpha_low.x=1"], "Could not override 'prune.alpha_low.x'"),
    Case("bad-grammar", ["head.l2=[1"], "cannot parse the override head.l2=[1"),
    Case(
        "misspelt-top-key",
        ["seeds=1"],
        "seeds is not a top-level setting: did you mean seed? (python -m dear_exp --cfg",
    ),
    # --- the schema: counts, sizes, rates, seeds, probabilities, ranges, enums, typed settings
    Case(
        "batch-negative",
        ["task=predict", "task.input=imgs", "task.batch_size=-1"],
        "task.batch_size=-1 must be a whole number >= 1",
    ),
    Case("batch-zero", ["benchmark.batch_size=0"], "benchmark.batch_size=0 must be a whole number >= 1"),
    Case("batch-float", ["train_data.batch_size=2.5"], "train_data.batch_size=2.5 must be a whole number >= 1"),
    Case("workers-negative", ["num_workers=-1"], "num_workers=-1 must be auto or a whole number >= 0"),
    Case("workers-word", ["num_workers=many"], "num_workers='many' must be auto or a whole number >= 0"),
    Case("seed-negative", ["seed=-3"], "seed=-3 must be a whole number >= 0"),
    Case("threads-zero", ["threads=0"], "threads=0 must be a whole number >= 1"),
    Case("epochs-zero", ["head.max_epochs=0"], "head.max_epochs=0 must be a whole number >= 1"),
    Case("epochs-word", ["trainer.max_epochs=abc"], "trainer.max_epochs='abc' must be a whole number >= 1"),
    Case("lr-zero", ["head.lr=0"], "head.lr=0 must be a number > 0"),
    Case("lr-negative", ["base_train.module.lr=-1"], "base_train.module.lr=-1 must be a number > 0"),
    Case("views-zero", ["head.views=0"], "head.views=0 must be a whole number >= 1"),
    Case("l2-empty", ["head.l2=[]"], "head.l2=[] must list at least one L2 strength > 0"),
    Case("betas-one", ["head.betas=[0.9]"], "head.betas=[0.9] must list 2 values"),
    Case("bootstrap-negative", ["task.bootstrap=-5"], "task.bootstrap=-5 must be a whole number >= 0"),
    Case("malloc-unknown", ["memory.malloc=jemalloc"], "memory.malloc='jemalloc' must be one of reuse, system"),
    Case("return-over-negative", ["memory.return_over_mb=-1"], "memory.return_over_mb=-1 must be a whole number >= 0"),
    Case("keep-below-zero", ["memory.keep_below_mb=0"], "memory.keep_below_mb=0 must be a whole number >= 1"),
    Case("huge-pages-word", ["memory.huge_pages=maybe"], "memory.huge_pages='maybe' must be true or false"),
    Case(
        "quality-high",
        ["augment.jpeg_quality=[30,101]"],
        "augment.jpeg_quality=101 must be a whole number >= 1 and <= 100",
    ),
    Case(
        "range-reversed",
        ["augment.noise_var=[50,10]"],
        "augment.noise_var=[50, 10] must be [low, high] with low <= high",
    ),
    Case("probability", ["augment.p_blur=2"], "augment.p_blur=2 must be a number >= 0 and <= 1"),
    Case("crop-zero", ["augment.crop=0"], "augment.crop=0 must be a whole number >= 1"),
    Case("alpha-order", ["prune.alpha_low=0.8", "prune.alpha_high=0.2"], "0 <= alpha_low < alpha_high <= 1"),
    Case("alpha-range", ["prune.alpha_high=1.5"], "prune.alpha_high=1.5 must be a number >= 0 and <= 1"),
    Case("prune-mode", ["prune.mode=middle"], "prune.mode='middle' must be one of bilateral"),
    Case("solver", ["head.solver=lbfgs"], "head.solver='lbfgs' must be one of newton, adam"),
    Case("online-newton", ["head.mode=online"], "head.mode=online trains through the backbone"),
    Case("unknown-setting", ["+head.momentum=0.9"], "head.momentum is not a setting of head"),
    Case("demo-scale", ["demo.scale=huge"], "demo.scale='huge' must be one of tiny, demo, bench"),
    Case("thresholds-empty", ["task.thresholds=[]"], "task.thresholds=[] lists no threshold policy"),
    Case("thresholds-unknown", ["task.thresholds=[logit0,oracel]"], "task.thresholds has ['oracel']"),
    Case("rad-weight", ["diag_data.rad_weight=area"], "diag_data.rad_weight='area' must be one of mask, alpha"),
    Case("crop-too-small", ["+experiment=cnnspot_flux", "augment=reference"], "augment.crop=96 is smaller than"),
    Case("whole-images-batch", ["diag_data.dissect_augment=false"], "set diag_data.batch_size=1 with it"),
    Case("limit-predict", ["+trainer.limit_predict_batches=2"], "trainer.limit_predict_batches=2: feature rows"),
    Case("layer", ["+experiment=npr_flux", "detector.net.feature_layer=layer9"], "must be one of layer1, layer2"),
    Case(
        "target-key", ["+callbacks.model_checkpoint.every=1"], "callbacks.model_checkpoint.every is not a parameter of"
    ),
    Case("devices-zero", ["+debug=fdr", "trainer.devices=0"], "Trainer(devices=0)"),
    Case("missing-input", ["task=predict"], "task.input must be set"),
    Case("missing-runs", ["task=compare"], "task.runs must be set"),
    # --- paths: missing, a file where a folder belongs, a destination that could not be written at the end
    Case("predict-nowhere", ["task=predict", "task.input=nowhere"], "task.input=nowhere does not exist; give an image"),
    Case("predict-not-image", ["task=predict", "task.input=afile"], "afile is not an image", setup=_file("afile")),
    Case("predict-empty", ["task=predict", "task.input=empty"], "no images in", setup=_folder("empty")),
    Case(
        "predict-output-below-file",
        ["task=predict", "task.input=imgs", "task.output=afile/p.csv"],
        "which is a file, not a folder",
        setup=lambda r: (_file("afile")(r), _images("imgs")(r)),
    ),
    Case(
        "predict-output-folder",
        ["task=predict", "task.input=imgs", "task.output=imgs"],
        "task.output=",
        setup=_images("imgs"),
    ),
    Case("cache-below-file", ["+debug=fdr", "cache.dir=afile/c"], "cache.dir=", setup=_file("afile")),
    Case("output-below-file", ["+debug=fdr", "paths.output_dir=afile/run"], "paths.output_dir=", setup=_file("afile")),
    Case(
        "export-dst-below-file",
        ["task=export", "task.src=.cache/demo/tiny-seed0/test", "task.dst=afile/out"],
        "task.dst=",
        setup=_file("afile"),
    ),
    Case(
        "export-dst-inside-src",
        ["task=export", "task.src=.cache/demo/tiny-seed0/test", "task.dst=.cache/demo/tiny-seed0/test/x"],
        "the export would read its own outputs",
    ),
    Case("export-src-nowhere", ["task=export", "task.src=nowhere", "task.dst=out"], "export source not found"),
    Case(
        "census-nowhere",
        ["task=census", "benchmark.root=nowhere"],
        "a benchmark.root you set must hold the folders of benchmark.layout",
    ),
    Case("compare-nowhere", ["task=compare", "task.runs=nowhere"], "no results.csv in nowhere"),
    Case("inpaint-nowhere", ["task=make_inpaint", "inpaint.real_dir=nowhere"], "not found; set inpaint.real_dir"),
    Case("train-data-nowhere", ["+debug=fdr", "train_data.root=nowhere"], "nowhere"),
    # --- checkpoints: each kind of wrong file says what it is
    Case("ckpt-missing", [*NPR, CKPT], "checkpoint not found"),
    Case("ckpt-empty", [*NPR, CKPT], "is an empty file", setup=_file("ck/model.pth", b"")),
    Case("ckpt-folder", [*NPR, CKPT], "is a folder, not a file", setup=_folder("ck/model.pth")),
    Case("ckpt-text", [*NPR, CKPT], "a text file, not a torch checkpoint", setup=_file("ck/model.pth", b"weights\n")),
    Case("ckpt-html", [*NPR, CKPT], "an HTML page", setup=_file("ck/model.pth", b"<!DOCTYPE html><html></html>")),
    Case("ckpt-code", [*NPR, CKPT], "for safety", setup=_torch_file("ck/model.pth", {"model": _Code()})),
    Case("ckpt-module", [*NPR, CKPT], "for safety", setup=_torch_file("ck/model.pth", {"fc": torch.nn.Linear(1, 1)})),
    Case("ckpt-wrong-keys", [*NPR, CKPT], "missing keys: fc1.weight", setup=_wrong_keys("ck/model.pth")),
    Case("ckpt-truncated", [*NPR, CKPT], "truncated or damaged", setup=_truncated("ck/model.pth")),
    Case("ckpt-list", [*NPR, CKPT], "not a state dict of tensors", setup=_torch_file("ck/model.pth", [torch.ones(1)])),
    Case("head-missing", [*NPR, "task.head=none.safetensors"], "DEAR head not found", extra=[CKPT]),
    Case(
        "head-text",
        [*NPR, "task.head=h.safetensors"],
        "cannot read DEAR head",
        setup=_file("h.safetensors", b"hello"),
        extra=[CKPT],
    ),
    # --- images that would otherwise give a wrong number
    Case(
        "float-image",
        ["task=predict", "task.input=imgs"],
        "holds floating-point samples",
        setup=_images("imgs", float_image=True),
        extra=["detector=npr", CKPT],
    ),
    Case(
        "corrupt-predict-image",
        ["task=predict", "task.input=imgs"],
        "corrupt or unreadable image",
        setup=_images("imgs", corrupt=True),
        extra=["detector=npr", CKPT],
    ),
    Case("corrupt-benchmark-image", ["+debug=fdr"], "corrupt or unreadable image", setup=_corrupt_benchmark_image),
    Case("mask-without-region", ["+debug=fdr"], "has no inpainted pixels: RAD compares", setup=_blank_mask),
]


@pytest.fixture
def root(tiny_demo: Path, tmp_path: Path) -> Path:
    """A user's folder: the tiny demo (linked, read-only use), nothing else."""
    r = tmp_path / "root"
    (r / ".cache").mkdir(parents=True)
    demo = r / ".cache" / "demo"
    demo.mkdir()
    for item in (tiny_demo / ".cache" / "demo").iterdir():
        if item.is_dir():
            shutil.copytree(item, demo / item.name, copy_function=os.link)  # hard links: no copy, no sharing of names
        else:
            shutil.copy(item, demo / item.name)
    return r


def check_case(rc: int, text: str, case: Case, root: Path) -> None:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert "Traceback" not in text, text[-3000:]
    assert rc == case.rc, (rc, text[-3000:])
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, text[-3000:]
    assert case.fragment in errors[0], (case.fragment, errors[0])
    left = [p for p in (root / "logs").rglob("*") if p.name in RESULT_FILES] if (root / "logs").exists() else []
    assert not left, f"a failed run left {left}"
    assert not list(root.rglob(".partial")), "a failed run left its staging folder"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(case: Case, root: Path, monkeypatch, capfd):
    if case.setup is not None:
        case.setup(root)
    if CKPT in case.extra:
        _torch_file("ck/model.pth", {"model": _npr_state()})(root)
    rc, text = run_entry([*case.args, *case.extra], root, monkeypatch, capfd)
    check_case(rc, text, case, root)


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


def test_a_bug_keeps_its_traceback_and_says_it_is_one(root: Path, monkeypatch, capfd):
    """A genuine bug (here: a task that raises KeyError) is not dressed up as an input error."""
    from dear_exp.tasks import census

    def broken(cfg):
        raise KeyError("internal")

    monkeypatch.setattr(census, "run", broken)
    rc, text = run_entry(["task=census"], root, monkeypatch, capfd)
    assert rc == 1 and "Traceback" in text and "KeyError" in text
    assert "this is a bug in dear-exp, not in your input" in text


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


def test_a_full_disk_is_one_line_and_leaves_nothing(root: Path, tmp_path: Path, monkeypatch, capfd):
    """The feature cache on a 256 KiB tmpfs: writing its first entry fills the disk."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "256k"):
        pytest.skip("needs root and mount to make a small tmpfs (a full disk cannot be simulated otherwise)")
    try:
        rc, text = run_entry(["+debug=fdr", f"cache.dir={disk}/features"], root, monkeypatch, capfd)
        check_case(rc, text, Case("disk-full", [], "no space left on the device"), root)
    finally:
        subprocess.run(["umount", str(disk)])


def test_os_errors_name_the_path_and_the_fix():
    from dear_exp.__main__ import os_message

    line = os_message(OSError(errno.ENOSPC, "No space left on device", "/data/cache/x.safetensors"))
    assert (
        line
        == "no space left on the device: /data/cache/x.safetensors; free space there, or point that path at a larger disk"
    )
    assert "permission denied: /x" in os_message(PermissionError(errno.EACCES, "Permission denied", "/x"))


def test_debug_runs_never_write_where_real_runs_read(root: Path, monkeypatch, capfd):
    """+debug=fdr: the demo's base model is trained into the run dir (not the shared cache); train_base
    of a released architecture refuses the real checkpoint path; a debug checkpoint, loaded, says so."""
    rc, text = run_entry(["task=train_base", "+debug=fdr", "detector=corvi"], root, monkeypatch, capfd)
    assert rc == 2 and "where real runs read it" in text and not (root / "checkpoints").exists()
    rc, text = run_entry(["+debug=fdr"], root, monkeypatch, capfd)
    assert rc == 0, text[-3000:]
    assert not list((root / ".cache" / "demo").glob("npr_base_*")), "a debug run wrote the shared demo checkpoint"
    trained = list((root / "logs").rglob("base_training/npr_base_*.pth"))
    assert len(trained) == 1
    rc, text = run_entry(
        ["task=evaluate", "+debug=default", "detector=npr", f"detector.checkpoint={trained[0]}"],
        root,
        monkeypatch,
        capfd,
    )
    assert rc == 0, text[-3000:]
    assert "was trained by a debug or limited run (a +debug preset, trainer.fast_dev_run=True)" in text


def test_staged_artefacts_move_into_place_on_success_and_vanish_on_failure(tmp_path: Path):
    from dear_exp.files import staged

    run = tmp_path / "run"
    (run / "run.log").parent.mkdir(parents=True)
    (run / "run.log").write_text("log")
    with staged(run / ".partial", run) as work:
        (work / "checkpoints").mkdir(parents=True)
        (work / "results.csv").write_text("a")
        (work / "checkpoints" / "best.ckpt").write_text("b")
        assert not (run / "results.csv").exists(), "visible before the run succeeded"
    assert (run / "results.csv").read_text() == "a" and (run / "checkpoints" / "best.ckpt").read_text() == "b"
    assert not (run / ".partial").exists() and (run / "run.log").read_text() == "log"
    failed = tmp_path / "failed"
    with pytest.raises(RuntimeError), staged(failed / ".partial", failed) as work:
        work.mkdir(parents=True)
        (work / "dissection.safetensors").write_text("half")
        raise RuntimeError("killed in the refit")
    assert not failed.exists() or not any(failed.rglob("*")), list(failed.rglob("*"))
    # a killed attempt's leftovers in the same run folder are cleared by the next attempt
    (run / ".partial").mkdir()
    (run / ".partial" / "results.csv").write_text("stale")
    with staged(run / ".partial", run) as work:
        assert not work.exists()


def test_destinations_are_checked_without_creating_anything(tmp_path: Path):
    from dear_exp.errors import DearError
    from dear_exp.files import require_writable

    (tmp_path / "afile").write_text("x")
    require_writable(tmp_path / "new" / "deeper", "cache.dir")
    assert not (tmp_path / "new").exists()
    with pytest.raises(DearError, match=r"cache.dir=.*afile/c lies below .*afile, which is a file"):
        require_writable(tmp_path / "afile" / "c", "cache.dir")
    with pytest.raises(DearError, match=r"task.output=.* is a folder; give the path of a file"):
        require_writable(tmp_path, "task.output", folder=False)
    with pytest.raises(DearError, match=r"paths.output_dir=.*afile is a file, not a folder"):
        require_writable(tmp_path / "afile", "paths.output_dir")


@pytest.mark.slow
def test_a_run_killed_during_the_refit_leaves_no_result(root: Path):
    """kill -9 while the reference (Adam) refit writes its Lightning checkpoints: only the hidden
    staging folder remains, and the same command then completes."""
    import time

    from tests.helpers import run_cli

    args = ["+debug=default", "head=reference", "logger=none", "hydra.run.dir=run", "threads=1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYDRA_", "DEAR_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dear_exp", *args],
        cwd=root,
        env={**env, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = root / "run" / ".partial" / "checkpoints" / "refit" / "best.ckpt"  # the first head's checkpoint
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not first.is_file():
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    assert alive, "the run ended before it could be killed in its refit"
    left = [p for p in (root / "run").rglob("*") if p.name in RESULT_FILES]
    assert first in left  # killed after writing a result-looking file...
    assert not [p for p in left if ".partial" not in p.parts], left  # ...which is only in the staging folder
    done = run_cli(*args, cwd=root, threads=None)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (root / "run" / "results.csv").is_file() and not (root / "run" / ".partial").exists()


def test_a_config_error_inside_a_task_is_a_bug_not_an_input_error(root: Path, monkeypatch, capfd):
    """An OmegaConf error raised by our code (a key it reads that the config lacks) is a bug: its
    traceback, exit 1, never shortened to a one-line composition message."""
    from dear_exp.tasks import census

    monkeypatch.setattr(census, "run", lambda cfg: cfg.no_such_key.value)
    rc, text = run_entry(["task=census"], root, monkeypatch, capfd)
    assert rc == 1 and "Traceback" in text and "this is a bug in dear-exp" in text
    assert not [line for line in text.splitlines() if line.startswith("error: ")]


def test_a_killed_data_loading_worker_is_one_line_not_a_bug():
    """torch's message for a DataLoader worker killed from outside (or by the kernel's OOM killer)."""
    from dear_exp.__main__ import user_message

    line = user_message(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. "))
    assert line is not None and line.startswith("a data-loading worker (pid 4242) was killed by signal: Killed (")
    assert user_message(RuntimeError("something else")) is None
