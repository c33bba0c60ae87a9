"""Threshold policies on a constructed case, bootstrap intervals, group means, plots, compare."""

import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from dear_exp.data.datamodules import EvalSource
from dear_exp.errors import DearError
from dear_exp.metrics import best_threshold, bootstrap_intervals, detection_metrics, evaluate_predictions
from dear_exp.report import compare_rows, markdown_table, plot_racc_facc, plot_severity, write_csv
from tests.helpers import read_csv, run_cli

REAL = torch.tensor([-1.0, 0.5, 1.0])
FAKE = torch.tensor([2.0, 3.0, 0.8])


def test_threshold_policies_on_a_constructed_case():
    at0 = detection_metrics(REAL, FAKE)
    assert at0["R.Acc"] == pytest.approx(100 / 3) and at0["F.Acc"] == 100.0
    assert at0["Gap"] == pytest.approx(100 / 3 - 100)
    # 0.65 (between 0.5 and 0.8) and 1.5 (between 1 and 2) both reach balanced accuracy 5/6;
    # the tie goes to the one closer to 0
    assert best_threshold(REAL, FAKE) == pytest.approx(0.65)
    oracle = detection_metrics(REAL, FAKE, 0.65)
    assert oracle["R.Acc"] == pytest.approx(200 / 3) and oracle["F.Acc"] == 100.0
    assert oracle["AUC"] == at0["AUC"]  # thresholds never change the ranking metrics


def _rows(**kw):
    sources = [
        EvalSource("r", "clean", True),
        EvalSource("a", "clean", False),
        EvalSource("b", "clean", False),
        EvalSource("w", "clean", False),
    ]
    batch = lambda t: [{"base": torch.tensor(t), "dear": torch.tensor(t) + 1}]  # noqa: E731
    outputs = [batch(REAL.tolist()), batch(FAKE.tolist()), batch([-2.0, 4.0]), batch([0.9, 1.2])]
    subsets = {"a": {"real": "r"}, "b": {"real": "r"}, "w": {"real": "r"}}
    return evaluate_predictions(sources, outputs, subsets, **kw)


def test_rows_per_policy_and_group_means_apart():
    rows = _rows(
        groups={"generators": ["a", "b"], "wild": ["w"]},
        policies=("logit0", "calibrated", "oracle"),
        calibrated={"base": 0.65, "dear": 1.65},
    )
    by = {(r["model"], r["threshold_policy"], r["subset"]): r for r in rows}
    assert by[("base", "calibrated", "a")]["threshold"] == 0.65
    assert by[("dear", "calibrated", "a")]["R.Acc"] == pytest.approx(200 / 3)  # dear logits are base + 1
    assert by[("base", "oracle", "a")]["threshold"] == pytest.approx(0.65)
    gens = by[("base", "logit0", "mean:generators")]
    assert gens["F.Acc"] == pytest.approx((100.0 + 50.0) / 2) and gens["n_fake"] == 5
    assert by[("base", "logit0", "mean:wild")]["F.Acc"] == 100.0
    with pytest.raises(ValueError, match="calibrated policy needs"):
        _rows(policies=("calibrated",))


def test_bootstrap_intervals_bracket_the_estimate_and_are_seeded():
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, generator=gen) - 0.5, torch.randn(200, generator=gen) + 0.5
    point = detection_metrics(real, fake)
    ci = bootstrap_intervals(real, fake, 0.0, 200, seed=1)
    for k in ("AUC", "R.Acc", "F.Acc"):
        assert ci[f"{k}_lo"] < point[k] < ci[f"{k}_hi"]
        assert ci[f"{k}_hi"] - ci[f"{k}_lo"] < 20
    assert ci == bootstrap_intervals(real, fake, 0.0, 200, seed=1)
    rows = _rows(bootstrap=20)
    assert "AUC_lo" in rows[0] and "AUC_lo" not in rows[-1]  # mean rows carry no interval


def test_report_and_plots_render_from_a_fixed_results_csv(tmp_path: Path):
    rows = _rows(policies=("logit0", "oracle"))
    write_csv(tmp_path / "results.csv", rows, {"task": "dear", "detector": "npr"})
    back = read_csv(tmp_path / "results.csv")
    assert len(back) == len(rows) and back[0]["detector"] == "npr"
    parsed = [{**r, **{k: float(r[k]) for k in ("AUC", "AP", "R.Acc", "F.Acc", "Acc", "Gap")}} for r in back]
    plot_racc_facc(tmp_path / "racc.png", parsed, "t")
    plot_severity(tmp_path / "sev.png", parsed, "t")
    for name in ("racc.png", "sev.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 400
    md = markdown_table(rows)
    assert "### clean, threshold logit0" in md and "oracle: chosen on the test subset itself" in md


def test_severity_plot_draws_the_policy_the_console_leads_with():
    """Calibrated where the run has it (the console's lead), else logit 0; mean rows only."""
    from dear_exp.report import severity_rows

    both = _rows(
        groups={"generators": ["a", "b"]},
        policies=("logit0", "calibrated", "oracle"),
        calibrated={"base": 0.65, "dear": 1.65},
    )
    policy, means = severity_rows(both)
    assert policy == "calibrated" and means
    assert {r["threshold_policy"] for r in means} == {"calibrated"}
    assert all(str(r["subset"]).startswith("mean") for r in means)
    policy, means = severity_rows(_rows(groups={"generators": ["a", "b"]}, policies=("logit0", "oracle")))
    assert policy == "logit0" and {r["threshold_policy"] for r in means} == {"logit0"}


def test_compare_marks_the_best_per_comparable_group():
    a = [
        {
            "model": "dear",
            "threshold_policy": "logit0",
            "postprocess": "clean",
            "subset": "mean",
            "AUC": "90",
            "AP": "90",
            "R.Acc": "80",
            "F.Acc": "70",
            "Acc": "75",
            "Gap": "10",
        }
    ]
    b = [{**a[0], "AUC": "95", "Gap": "-5"}, {**a[0], "postprocess": "jpeg", "AUC": "50"}]
    head, lines, best = compare_rows([("run a", a), ("run b", b)])
    auc, gap = head.index("AUC"), head.index("Gap")
    assert (1, auc) in best and (0, auc) not in best and (1, gap) in best
    assert (2, auc) in best  # alone in its (policy, setting, subset) group
    calibrated = [{**r, "threshold_policy": "calibrated"} for r in a]
    _, lines, _ = compare_rows([("run a", a + calibrated)])
    assert [line[2] for line in lines] == ["calibrated", "logit0"]  # the lead policy first, as elsewhere


@pytest.mark.xdist_group("cli")
def test_compare_and_predict_through_the_cli(tiny_demo: Path, tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    for i, alpha in enumerate(("0.1", "0.2")):
        run_dir = root / "runs" / str(i)
        rows = _rows()
        for r in rows:
            r["AUC"] += i
        write_csv(
            run_dir / "results.csv",
            rows,
            {
                "task": "dear",
                "detector": "npr",
                "benchmark": "demo",
                "prune_mode": "bilateral",
                "alpha_low": alpha,
                "alpha_high": "0.8",
            },
        )
    proc = run_cli("task=compare", "task.runs=[runs/*]", "logger=none", "hydra.run.dir=out_compare", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (root / "out_compare" / "compare.md").read_text()
    assert "**" in md
    # runs are labelled by what differs between them; the shared base detector is shown once
    lines = [line for line in md.splitlines() if line.startswith("| alpha_low=")]
    assert {line.split(" | ")[0] for line in lines} == {"| alpha_low=0.1", "| alpha_low=0.2"}
    base = [line for line in lines if " | Base | " in line]
    assert base and all(line.startswith("| alpha_low=0.1 |") for line in base)
    assert len(base) == len({tuple(line.split(" | ")[2:5]) for line in base})
    images = root / ".cache/demo/tiny-seed0/test/fake/gen_a"
    proc = run_cli("+debug=default", "task=predict", f"task.input={images}", "hydra.run.dir=out_predict", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    preds = read_csv(root / "out_predict" / "predictions.csv")
    assert [p["path"] for p in preds] == sorted(p.name for p in images.iterdir())
    assert all(p["verdict"] == ("fake" if float(p["logit"]) > 0 else "real") for p in preds)
    assert "scored 8 image(s)" in proc.stdout
    proc = run_cli("+debug=default", "task=predict", f"task.input={root}/nope.png", cwd=root)
    assert proc.returncode == 2 and "nope.png does not exist; give an image" in proc.stderr.splitlines()[-1]


def test_best_threshold_matches_a_brute_force_search():
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        real = torch.randint(-5, 5, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen).double()
        fake = torch.randint(-3, 7, (int(torch.randint(1, 30, (1,), generator=gen)),), generator=gen).double()
        thr = best_threshold(real, fake)
        best = max(detection_metrics(real, fake, c)["Acc"] for c in torch.arange(-8, 9, 0.25).tolist())
        assert detection_metrics(real, fake, thr)["Acc"] == pytest.approx(best)


def test_mean_rows_count_a_shared_real_set_once():
    rows = _rows()
    mean = next(r for r in rows if r["subset"] == "mean" and r["model"] == "base")
    assert mean["n_real"] == 3 and mean["real"] == "r" and mean["n_fake"] == 3 + 2 + 2


def test_compare_over_seeds_gives_mean_and_sd_per_configuration(compose_cfg, tmp_path: Path):
    from dear_exp.__main__ import run_task as compare

    identity = {"task": "dear", "detector": "npr", "benchmark": "demo", "prune_mode": "bilateral", "alpha_high": "0.8"}
    aucs = {("0.2", 0): 80.0, ("0.2", 1): 84.0, ("0.2", 2): 82.0, ("0.1", 0): 70.0, ("0.1", 1): 71.0}
    for (alpha, seed), auc in aucs.items():
        rows = [
            {
                "model": "dear",
                "threshold_policy": "logit0",
                "postprocess": "clean",
                "subset": "mean",
                "AUC": auc,
                "AP": 1.0,
                "R.Acc": 1.0,
                "F.Acc": 1.0,
                "Acc": 1.0,
                "Gap": 0.0,
            }
        ]
        write_csv(
            tmp_path / "runs" / f"{alpha}_{seed}" / "results.csv", rows, {**identity, "alpha_low": alpha, "seed": seed}
        )
    cfg = compose_cfg("task=compare", f"task.runs=[{tmp_path}/runs/*]", "task.over_seeds=true")
    compare(cfg)
    md = (Path(cfg.paths.output_dir) / "compare.md").read_text()
    assert "alpha_low=0.2 (seeds 0,1,2)" in md and "**82.0 ± 2.0**" in md
    assert "alpha_low=0.1 (seeds 0,1)" in md and "70.5 ± 0.7" in md
    one = compose_cfg("task=compare", f"task.runs=[{tmp_path}/runs/0.2_*]", "task.over_seeds=true")
    compare(one)  # one configuration: named by its seeds alone, not by its first run's folder
    md = (Path(one.paths.output_dir) / "compare.md").read_text()
    assert "| seeds 0,1,2 |" in md and "0.2_0" not in md
    write_csv(tmp_path / "runs" / "again" / "results.csv", rows, {**identity, "alpha_low": "0.1", "seed": 1})
    with pytest.raises(DearError, match="share a configuration and a seed"):
        compare(cfg)


def test_predict_applies_a_saved_calibrated_threshold(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """task.threshold_from=<run> takes each model's calibrated threshold from its results.csv (the
    threshold column of the calibrated rows); task.threshold=<logit> sets one for every model."""
    from dear_exp.__main__ import run_task

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    images = root / ".cache/demo/tiny-seed0/test/fake/gen_a"

    def predict(*overrides: str) -> list[dict[str, str]]:
        cfg = compose_cfg("+debug=default", "task=predict", f"task.input={images}", *overrides, root=root)
        run_task(cfg)
        return read_csv(Path(cfg.paths.output_dir) / "predictions.csv")

    logits = sorted(float(p["logit"]) for p in predict())
    cut = (logits[3] + logits[4]) / 2  # half of the 8 images on each side
    detector = compose_cfg("task=predict", f"task.input={images}").detector.name
    rows = _rows(policies=("logit0", "calibrated"), calibrated={"base": cut, "dear": 5.0})
    write_csv(tmp_path / "run" / "results.csv", rows, {"task": "dear", "detector": detector})
    for how in (f"task.threshold_from={tmp_path / 'run'}", f"task.threshold={cut!r}"):
        preds = predict(how)
        assert [p["verdict"] for p in preds] == ["fake" if float(p["logit"]) > cut else "real" for p in preds]
        assert sum(p["verdict"] == "fake" for p in preds) == 4 and float(preds[0]["threshold"]) == cut

    def refused(*overrides: str) -> str:
        with pytest.raises(DearError) as err:
            predict(*overrides)
        assert "\n" not in str(err.value)
        return str(err.value)

    assert "both set" in refused(f"task.threshold_from={tmp_path / 'run'}", "task.threshold=1.0")
    assert "no results.csv there" in refused(f"task.threshold_from={tmp_path / 'nowhere'}")
    assert "must be a number" in refused("task.threshold=high")
    write_csv(tmp_path / "other" / "results.csv", rows, {"task": "dear", "detector": "corvi"})
    assert "calibrated for detector corvi" in refused(f"task.threshold_from={tmp_path / 'other'}")
    write_csv(tmp_path / "plain" / "results.csv", _rows(), {"task": "dear", "detector": detector})
    assert "no calibrated threshold for model base" in refused(f"task.threshold_from={tmp_path / 'plain'}")


def test_predict_names_a_control_head_after_its_model(compose_cfg, tiny_demo: Path, tmp_path: Path):
    """task.head=<run>/head_refit.safetensors scores the refit control: its columns say refit, not dear."""
    from dear_exp.__main__ import run_task
    from dear_exp.detectors import build_detector
    from dear_exp.refit.head import MaskedLinearHead, head_identity, save_head
    from dear_exp.training import ensure_detector

    root = tmp_path / "root"
    shutil.copytree(tiny_demo, root)
    images = root / ".cache/demo/tiny-seed0/test/fake/gen_a"
    cfg = compose_cfg("+debug=default", "task=predict", f"task.input={images}", root=root)
    ensure_detector(cfg)
    detector = build_detector(cfg.detector)
    head = MaskedLinearHead(detector.feature_channels)
    head.set_mask(torch.ones(detector.feature_channels))
    save_head(tmp_path / "head_refit.safetensors", head, head_identity(detector))
    head_file = f"task.head={tmp_path}/head_refit.safetensors"
    cfg = compose_cfg("+debug=default", "task=predict", f"task.input={images}", head_file, root=root)
    run_task(cfg)
    preds = read_csv(Path(cfg.paths.output_dir) / "predictions.csv")
    assert {"refit_logit", "refit_verdict", "refit_threshold"} <= set(preds[0]) and "dear_logit" not in preds[0]


def test_compare_draws_alpha_heatmaps_of_a_sweep(compose_cfg, tmp_path: Path):
    from dear_exp.__main__ import run_task as compare

    identity = {"task": "dear", "detector": "npr", "benchmark": "demo", "prune_mode": "bilateral"}
    for lo, hi, seed, auc in [
        ("0.1", "0.8", 0, 80.0),
        ("0.1", "0.8", 1, 84.0),
        ("0.2", "0.8", 0, 70.0),
        ("0.1", "0.9", 0, 60.0),
    ]:
        rows = [
            {
                "model": model,
                "threshold_policy": "logit0",
                "postprocess": "jpeg75",
                "subset": "mean",
                "AUC": auc + off,
                "AP": 1.0,
                "R.Acc": 1.0,
                "F.Acc": 50.0,
                "Acc": 2.0,
                "Gap": 0.0,
            }
            for model, off in (("base", 5.0), ("dear", 0.0))
        ]
        write_csv(
            tmp_path / "runs" / f"{lo}_{hi}_{seed}" / "results.csv",
            rows,
            {**identity, "alpha_low": lo, "alpha_high": hi, "seed": seed},
        )
    cfg = compose_cfg("task=compare", f"task.runs=[{tmp_path}/runs/*]")
    compare(cfg)
    out = Path(cfg.paths.output_dir)
    cells = {(r["metric"], r["alpha_low"], r["alpha_high"]): r for r in read_csv(out / "heatmaps.csv")}
    assert cells[("AUC", "0.1", "0.8")]["mean"] == "82.0000" and cells[("AUC", "0.1", "0.8")]["runs"] == "2"
    assert (
        cells[("AUC", "0.2", "0.8")]["mean"] == "70.0000" and ("AUC", "0.2", "0.9") not in cells
    )  # base rows not drawn
    assert (out / "heatmaps_logit0.png").stat().st_size > 10_000
    single = tmp_path / "single"
    write_csv(single / "a" / "results.csv", rows, {**identity, "alpha_low": "0.1", "alpha_high": "0.9"})
    shutil.rmtree(out)  # compose_cfg's output folder is the same for both runs
    cfg = compose_cfg("task=compare", f"task.runs=[{single}/*]")
    compare(cfg)
    assert not (Path(cfg.paths.output_dir) / "heatmaps.csv").exists()  # one cell: no sweep to draw


def test_the_console_glossary_names_only_the_policies_its_table_holds(capsys):
    """task=evaluate has no logit-0 rows beside the calibrated ones: its summary table's title does
    not explain logit0."""
    from dear_exp.report import print_table

    kw = {"groups": {"generators": ["a", "b"]}, "calibrated": {"base": 0.65, "dear": 1.65}}
    print_table(_rows(policies=("calibrated", "oracle"), **kw))
    out = " ".join(capsys.readouterr().out.split())
    assert "oracle = chosen on the test set" in out and "logit0 = the reference's rule" not in out
    print_table(_rows(policies=("logit0", "calibrated", "oracle"), **kw))
    out = " ".join(capsys.readouterr().out.split())
    assert "logit0 = the reference's rule" in out and "oracle = chosen on the test set" in out


def test_heatmap_colours_span_at_least_a_point():
    """Cells that all read 99.8 do not span the colour map; a real spread keeps its own range."""
    from dear_exp.tasks.compare import colour_range

    assert colour_range([[99.76, 99.84], [99.8, math.nan]]) == pytest.approx((99.0, 100.0))  # within 0-100
    assert colour_range([[50.0, 50.2]]) == pytest.approx((49.6, 50.6))
    assert colour_range([[80.0, 95.0], [math.nan, 90.0]]) == (80.0, 95.0)
    assert colour_range([[math.nan]]) == (0.0, 1.0)


def test_compare_labels_tell_apart_runs_of_two_sweeps_with_the_same_settings():
    """Job 0 of two sweeps with the same values: the label adds the shortest folder tails that differ."""
    from dear_exp.tasks.compare import labels

    rows = [{"alpha_low": "0.1"}, {"alpha_low": "0.1"}, {"alpha_low": "0.2"}]
    folders = [Path("/x/sw_joblib/0"), Path("/x/sw_local/0"), Path("/x/sw_local/1")]
    assert labels(rows, folders, ("alpha_low",)) == [
        "alpha_low=0.1 (sw_joblib/0)",
        "alpha_low=0.1 (sw_local/0)",
        "alpha_low=0.2",
    ]
    same = [{"alpha_low": "0.1"}] * 2
    assert labels(same, [Path("/a/run"), Path("/b/run")], ("alpha_low",)) == ["a/run", "b/run"]
    assert labels(same, [Path("/a/1"), Path("/a/2")], ("alpha_low",), by_folder=False) == ["1", "2"]
