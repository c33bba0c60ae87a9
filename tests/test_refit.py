"""The converged head refit: the solver against an independent solver, the standardisation fold,
convergence reporting, and the controls of a task=dear run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dear_exp.__main__ import run_task
from dear_exp.refit import newton_fit
from tests.helpers import read_csv


def _problem(seed: int = 0, channels: int = 12):
    """A small, non-separable problem on features of mixed scale and offset (as pooled ReLU maps are)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.2, 5.0, channels)

    def rows(n: int, p_fake: float) -> dict[str, torch.Tensor]:
        y = (torch.rand(n, generator=gen) < p_fake).float()
        x = (
            torch.randn(n, channels, generator=gen) * scale
            + 3.0
            + 0.8 * y.unsqueeze(1) * torch.randn(channels, generator=gen)
        )
        return {"pooled": x.float(), "label": y}

    mask = torch.ones(channels)
    mask[[1, 4, 7, 10]] = 0
    return rows(300, 0.5), rows(120, 0.8), rows(100, 0.5), mask


def _sklearn_fit(train, inpaint, mask, inpaint_weight: float, l2: float):
    """scikit-learn's logistic regression on the same objective: standardised kept features, sample
    weights 1/N_train and w/N_inpaint, C = 1/l2 (sklearn: C * sum(s_i * loss_i) + |v|^2 / 2)."""
    from sklearn.linear_model import LogisticRegression

    kept = mask.bool().numpy()
    x = train["pooled"].double().numpy()[:, kept]
    mu, sd = x.mean(0), x.std(0)
    z = np.vstack([(x - mu) / sd, (inpaint["pooled"].double().numpy()[:, kept] - mu) / sd])
    y = np.concatenate([train["label"].numpy(), inpaint["label"].numpy()])
    weights = np.concatenate(
        [np.full(len(x), 1 / len(x)), np.full(len(inpaint["label"]), inpaint_weight / len(inpaint["label"]))]
    )
    clf = LogisticRegression(C=1 / l2, tol=1e-12, max_iter=100_000).fit(z, y, sample_weight=weights)
    return clf, mu, sd


def test_newton_equals_sklearn_with_the_inpaint_term_and_the_mask():
    train, inpaint, val, mask = _problem()
    fit = newton_fit(train, inpaint, val, mask, inpaint_weight=0.7, l2=[0.05])
    clf, mu, sd = _sklearn_fit(train, inpaint, mask, 0.7, 0.05)
    assert fit.chosen.converged and fit.chosen.grad_max <= 1e-9
    d = int(mask.sum())
    # the same optimum: standardised weights and bias within 1e-6 (sklearn converged to tol 1e-12)
    assert np.allclose(fit.theta[:d].numpy(), clf.coef_[0], rtol=0, atol=1e-6), (fit.theta[:d], clf.coef_)
    assert abs(float(fit.theta[d]) - float(clf.intercept_[0])) < 1e-6
    # and so the same logits on unseen rows through the saved (folded) head
    kept = mask.bool().numpy()
    expected = clf.decision_function((val["pooled"].double().numpy()[:, kept] - mu) / sd)
    with torch.no_grad():
        got = fit.head(val["pooled"]).numpy()
    assert np.abs(got - expected).max() < 1e-5
    # the pruned channels carry no weight
    assert torch.all(fit.head.linear.weight[0, ~mask.bool()] == 0)


def test_the_grid_keeps_the_l2_with_the_lowest_validation_bce():
    train, inpaint, val, mask = _problem(seed=1)
    grid = [1.0, 0.1, 0.01, 0.001]
    fit = newton_fit(train, inpaint, val, mask, 1.0, grid)
    assert [s.l2 for s in fit.path] == sorted(grid)
    assert all(s.converged for s in fit.path)
    losses = {}
    for l2 in grid:  # each strength solved independently by sklearn, validated by hand
        clf, mu, sd = _sklearn_fit(train, inpaint, mask, 1.0, l2)
        z = clf.decision_function((val["pooled"].double().numpy()[:, mask.bool().numpy()] - mu) / sd)
        y = val["label"].numpy()
        losses[l2] = float(np.mean(np.logaddexp(0, z) - y * z))
    for solve in fit.path:
        assert solve.val_loss == pytest.approx(losses[solve.l2], abs=1e-6)
    assert fit.chosen.l2 == min(losses, key=losses.get)


def test_the_saved_head_reproduces_the_solver_logits_after_the_fold():
    train, inpaint, val, mask = _problem(seed=2, channels=40)
    fit = newton_fit(train, inpaint, val, torch.ones(40), 1.0, [1e-4])  # weak L2: large, cancelling weights
    for rows in (train, inpaint, val):
        with torch.no_grad():
            head = fit.head(rows["pooled"])
        assert (head - fit.logits(rows["pooled"])).abs().max() < 1e-5
    # a start from the detector's own head changes where Newton starts, not where it ends
    again = newton_fit(train, inpaint, val, torch.ones(40), 1.0, [1e-4], init=fit.head)
    assert again.chosen.iterations < fit.chosen.iterations
    assert torch.allclose(again.theta, fit.theta, atol=1e-7)


def test_reusing_the_hessian_reaches_plain_newtons_optimum_with_fewer_hessians(monkeypatch):
    from dear_exp.refit import newton

    train, inpaint, val, _ = _problem(seed=3, channels=60)
    mask = torch.ones(60)
    grid = [1.0, 0.1, 0.01, 0.001, 0.0001, 0.00001]
    formed = []
    real = newton._data_hessian
    monkeypatch.setattr(newton, "_data_hessian", lambda *a: formed.append(1) or real(*a))
    fit = newton_fit(train, inpaint, val, mask, 1.0, grid)
    reused = len(formed)
    formed.clear()
    monkeypatch.setattr(newton, "KEEP_IF_SHRINKS", 0.0)  # a Hessian at every step: plain Newton
    plain = newton_fit(train, inpaint, val, mask, 1.0, grid)
    assert all(s.converged for s in fit.path) and all(s.converged for s in plain.path)
    assert reused < len(formed), (reused, len(formed))
    assert torch.allclose(fit.theta, plain.theta, rtol=0, atol=1e-8)
    assert fit.chosen.l2 == plain.chosen.l2


def test_an_old_hessian_is_formed_anew_rather_than_searched_along(monkeypatch):
    """A kept Hessian's full step is tried once; where it does not steer well the Hessian is formed anew
    at the same point. Searching along the old step instead halved it up to 34 times per failure (near
    the optimum rounding alone fails Armijo's test: 479 evaluations of the loss on the demo's rows,
    against plain Newton's 37)."""
    from dear_exp.refit import newton

    train, _, _, mask = _problem(seed=4, channels=80)
    kept = mask.bool()
    x = train["pooled"][:, kept].double()
    mu, sd = x.mean(0), x.std(0, unbiased=False)
    design = newton.Design([newton.Group(train["pooled"], train["label"], 1.0)], kept, mu, sd, torch.device("cpu"))
    start = torch.zeros(int(kept.sum()) + 1, dtype=torch.float64)
    hess = newton._data_hessian(design, start)
    evaluations = []
    real = newton._objective
    monkeypatch.setattr(newton, "_objective", lambda *a: evaluations.append(1) or real(*a))
    counts = []
    for old in (None, hess, hess * 1e-6):  # none, a good one, one whose step overshoots a million-fold
        evaluations.clear()
        theta, _, _, grad_max, _ = newton.newton_solve(design, 0.01, start, 1e-9, 100, old)
        assert grad_max <= 1e-9
        counts.append(len(evaluations))
    fresh, good, bad = counts
    assert good <= fresh + 1 and bad <= fresh + 1, counts  # the bad one cost one evaluation, no search


def test_an_unconverged_solve_is_a_warning_with_its_numbers(caplog):
    train, inpaint, val, mask = _problem()
    with caplog.at_level(logging.WARNING, logger="dear_exp.refit"):
        fit = newton_fit(train, inpaint, val, mask, 1.0, [1e-3], max_iter=1)
    assert not fit.chosen.converged and fit.chosen.iterations == 1
    message = caplog.records[-1].getMessage()
    assert (
        "did not converge at l2=0.001" in message and "1 Newton iterations" in message and "max |gradient|" in message
    )


def _views(cache: Path) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors import safe_open

    rows = {}
    for path in sorted((cache / "views").glob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            describe = f.metadata()["describe"]
        rows["val" if "val" in describe else "inpaint" if "inpaint" in describe else "train"] = load_file(path)
    return rows


def test_dear_run_fits_the_controls_and_the_refit_matches_a_reference_fit(compose_cfg, tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=default", "postprocess=clean", root=root)
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read_csv(out / "results.csv")
    assert list(dict.fromkeys(r["model"] for r in rows)) == ["base", "refit", "random", "dear"]
    fits = [r for r in read_csv(out / "refit.csv") if r["chosen"] == "True"]
    assert [f["model"] for f in fits] == ["refit", "random", "dear"]
    assert all(f["converged"] == "True" and float(f["grad_max"]) <= 1e-9 for f in fits)
    heads = {
        name: load_file(out / f)
        for name, f in (
            ("refit", "head_refit.safetensors"),
            ("random", "head_random.safetensors"),
            ("dear", "head.safetensors"),
        )
    }
    assert int(heads["refit"]["mask"].sum()) == 512
    assert int(heads["random"]["mask"].sum()) == int(heads["dear"]["mask"].sum()) == 512 - 2 * 102
    assert not torch.equal(heads["random"]["mask"], heads["dear"]["mask"])
    # the refit control against scikit-learn on the very rows the run cached, at the L2 it chose
    views = _views(Path(cfg.cache.dir))
    refit = fits[0]
    clf, mu, sd = _sklearn_fit(views["train"], views["inpaint"], torch.ones(512), 1.0, float(refit["l2"]))
    z = clf.decision_function((views["val"]["pooled"].double().numpy() - mu) / sd)
    y = views["val"]["label"].numpy()
    reference = 0.5 * ((z[y == 0] < 0).mean() + (z[y == 1] > 0).mean())
    assert abs(float(refit["val_bacc"]) - reference) <= 0.02
    assert float(refit["val_bacc"]) != 0.5
    with torch.no_grad():
        logits = heads["refit"]["weight"].double() @ views["val"]["pooled"].double().T + heads["refit"]["bias"].double()
    assert np.abs(logits.numpy()[0] - z).max() < 1e-5
    # a control's saved head, evaluated on its own, is reported under its name with the run's numbers
    cfg = compose_cfg(
        "+experiment=demo",
        "+debug=default",
        "postprocess=clean",
        "task=evaluate",
        f"task.head={out / 'head_refit.safetensors'}",
        root=root,
    )
    cfg.paths.output_dir = str(tmp_path / "eval")
    run_task(cfg)
    again = {
        (r["model"], r["threshold_policy"], r["subset"]): r["AUC"] for r in read_csv(tmp_path / "eval" / "results.csv")
    }
    assert {m for m, _, _ in again} == {"base", "refit"}
    assert all(
        auc == next(r["AUC"] for r in rows if (r["model"], r["threshold_policy"], r["subset"]) == key)
        for key, auc in again.items()
    )


def test_prune_none_is_the_refit_alone_and_says_so(compose_cfg, tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg("+experiment=demo", "+debug=default", "postprocess=clean", "prune=none", root=root)
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read_csv(out / "results.csv")
    assert {r["model"] for r in rows} == {"base", "refit"}
    assert {(r["prune_mode"], r["alpha_low"], r["alpha_high"]) for r in rows} == {("none", "", "")}
    assert not (out / "rad_hist.png").exists()
    assert int(load_file(out / "head.safetensors")["mask"].sum()) == 512


def test_controls_off_and_the_adam_recipe_keeps_its_best_epoch(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """head=reference (the paper's Adam): the kept epoch's val/bacc is what refit.csv reports."""
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    cfg = compose_cfg(
        "+experiment=demo",
        "+debug=default",
        "postprocess=clean",
        "head=reference",
        "head.lr=1e-2",
        "trainer.max_epochs=4",
        "task.controls=false",
        "logger=csv",
        root=root,
    )
    run_task(cfg)
    out = Path(cfg.paths.output_dir)
    assert {r["model"] for r in read_csv(out / "results.csv")} == {"base", "dear"}
    (fit,) = read_csv(out / "refit.csv")
    assert fit["solver"] == "adam" and fit["model"] == "dear" and fit["epochs"] == "4"
    logged = read_csv(next((out / "csv").glob("version_*/metrics.csv")))
    epochs = [float(r["val/bacc"]) for r in logged if r.get("val/bacc") and r.get("epoch")]
    assert len(epochs) == 4 and float(fit["val_bacc"]) == pytest.approx(max(epochs))
    # the run's end logs the kept epoch's value as the summary (no epoch), and metrics.csv has it
    (summary,) = [r for r in logged if r.get("val/bacc") and not r.get("epoch")]
    assert float(summary["val/bacc"]) == pytest.approx(float(fit["val_bacc"]))
    assert float(fit["val_bacc_last"]) == pytest.approx(epochs[-1])
    assert (out / "checkpoints" / "dear" / "best.ckpt").is_file()


def test_wandb_summary_holds_the_kept_value_not_the_last_logged(tmp_path: Path):
    from lightning.pytorch.loggers import WandbLogger

    from dear_exp.build import finish_wandb
    from dear_exp.report import log_summary

    logger = WandbLogger(project="dear-exp-tests", save_dir=str(tmp_path), offline=True)
    try:
        for step, value in enumerate((0.6, 0.9, 0.5)):  # epochs: the best is the second
            logger.log_metrics({"val/bacc": value}, step=step)
        assert logger.experiment.summary["val/bacc"] == 0.5
        log_summary([logger], {"val/bacc": 0.9, "refit/dear/val_bacc": 0.9})
        assert logger.experiment.summary["val/bacc"] == 0.9
        assert logger.experiment.summary["refit/dear/val_bacc"] == 0.9
    finally:
        finish_wandb()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("head.views=2.5", "head.views=2.5 must be a whole number >= 1"),
        ("head.max_iter=0", "head.max_iter=0 must be a whole number >= 1"),
        ("head.l2=[0]", "head.l2=0 must be a number > 0"),
        ("head.l2=[]", "head.l2=[] must list at least one L2 strength > 0"),
        (
            "head.mode=online",
            "head.mode=online trains through the backbone at every step, which needs head.solver=adam",
        ),
        ("head.solver=lbfgs", "head.solver='lbfgs' must be one of newton, adam"),
        ("head.lr=0", "head.lr=0 must be a number > 0"),
        ("+head.l2s=[1]", "head.l2s is not a setting of head"),
    ],
)
def test_impossible_refit_settings_fail_before_any_work(compose_cfg, override, message):
    from dear_exp.errors import DearError
    from dear_exp.schema import validate

    with pytest.raises(DearError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(compose_cfg(override))


def test_a_head_is_refused_on_a_detector_it_was_not_refitted_on(tmp_path: Path, caplog):
    """head.safetensors records the detector (class, layer, weights sha256) it was refitted on: the same
    shapes on another checkpoint would give numbers that mean nothing, silently."""
    from safetensors.torch import save_file

    from dear_exp.detectors.npr import NPR
    from dear_exp.errors import DearError
    from dear_exp.refit.head import MaskedLinearHead, head_identity, load_head, save_head

    torch.manual_seed(0)
    mine, other = NPR(), NPR()
    head = MaskedLinearHead(mine.feature_channels)
    save_head(tmp_path / "head.safetensors", head, head_identity(mine))
    back = load_head(mine, tmp_path / "head.safetensors")
    assert torch.equal(back.linear.weight, head.linear.weight)
    with pytest.raises(DearError, match=r"was refitted on other features \(detector_sha256=.*use the head of a run"):
        load_head(other, tmp_path / "head.safetensors")
    tensors = {"weight": head.linear.weight.detach(), "bias": head.linear.bias.detach(), "mask": head.mask}
    save_file(tensors, tmp_path / "old.safetensors")  # written before heads carried their detector
    load_head(mine, tmp_path / "old.safetensors")
    assert "does not record the detector it was refitted on" in caplog.text


def test_a_saved_head_is_the_same_bytes_every_time(tmp_path: Path):
    """safetensors orders its header's metadata by hash map (it changes from save to save); a run's
    files are written with the header's keys sorted, so the same head is the same file."""
    import json

    from safetensors.torch import save

    from dear_exp.detectors.npr import NPR
    from dear_exp.refit.head import MaskedLinearHead, head_identity, load_head, save_head

    torch.manual_seed(0)
    detector = NPR()
    head = MaskedLinearHead(detector.feature_channels, dtype=torch.float64)
    identity = head_identity(detector)
    tensors = {"weight": head.linear.weight.detach(), "bias": head.linear.bias.detach(), "mask": head.mask}
    assert len({save(tensors, metadata=identity) for _ in range(20)}) > 1  # safetensors' own bytes vary
    files = []
    for i in range(20):
        save_head(tmp_path / f"head{i}.safetensors", head, identity)
        files.append((tmp_path / f"head{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    n = int.from_bytes(files[0][:8], "little")
    header = json.loads(files[0][8 : 8 + n])
    assert list(header) == sorted(header) and list(header["__metadata__"]) == sorted(identity)
    assert n % 8 == 0
    back = load_head(detector, tmp_path / "head0.safetensors")
    assert torch.equal(back.linear.weight, head.linear.weight) and torch.equal(back.mask, head.mask)


def test_rows_too_large_to_keep_are_streamed_to_the_same_design_and_optimum():
    from dear_exp.refit import newton

    train, inpaint, val, mask = _problem(seed=5, channels=30)
    kept = mask.bool()
    x = train["pooled"][:, kept].double()
    mu, sd = x.mean(0), x.std(0, unbiased=False)
    groups = [
        newton.Group(train["pooled"], train["label"], 1.0),
        newton.Group(inpaint["pooled"], inpaint["label"], 0.5),
    ]
    whole = newton.Design(groups, kept, mu, sd, torch.device("cpu"))
    streamed = newton.Design(groups, kept, mu, sd, torch.device("cpu"), keep_bytes=0)
    assert whole.kept_blocks is not None and streamed.kept_blocks is None
    for part in ("z", "y", "w"):
        assert torch.equal(
            getattr(whole.kept_blocks[0], part), torch.cat([getattr(b, part) for b in streamed.blocks()])
        )
    z = whole.kept_blocks[0].z
    expected = torch.cat([(torch.cat([g.x for g in groups])[:, kept].double() - mu) / sd, torch.ones(len(z), 1)], 1)
    assert torch.equal(z, expected.double())
    start = torch.zeros(int(kept.sum()) + 1, dtype=torch.float64)
    a, *_ = newton.newton_solve(whole, 0.01, start, 1e-9, 100)
    b, *_ = newton.newton_solve(streamed, 0.01, start, 1e-9, 100)
    assert torch.allclose(a, b, rtol=0, atol=1e-8)  # the same optimum (a sum over blocks rounds apart)
