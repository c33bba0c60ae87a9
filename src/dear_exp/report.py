"""What a run leaves behind: results.csv, results.md, the RAD plot, scores, mask and head."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from dear_exp.metrics import METRICS

MODEL_NAMES = {"base": "Base", "dear": "DEAR"}


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary sibling, then rename: no reader sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    write_atomic(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def save_dissection(out_dir: Path, scores: torch.Tensor | None, mask: torch.Tensor) -> None:
    """`rad_scores.csv` (channel, rad, kept) and `dissection.safetensors` (rad, mask)."""
    tensors = {"mask": mask.float()}
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["channel", "rad", "kept"])
    for k in range(mask.numel()):
        writer.writerow([k, "" if scores is None else f"{float(scores[k]):.8g}", int(mask[k])])
    if scores is not None:
        tensors["rad"] = scores.float()
    write_atomic(out_dir / "rad_scores.csv", buf.getvalue())
    save_tensors(out_dir / "dissection.safetensors", tensors)


def plot_rad(path: Path, scores: torch.Tensor, mask: torch.Tensor, title: str) -> None:
    """Histogram of RAD scores with the pruned bands shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = scores.float().numpy()
    kept = mask.bool().numpy()
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=120)
    ax.hist(s, bins=60, color="#4C72B0", alpha=0.85, label=f"channels ({kept.sum()} kept of {len(s)})")
    lo, hi = s.min(), s.max()
    if kept.any() and (~kept).any():
        keep_lo, keep_hi = s[kept].min(), s[kept].max()
        if (s < keep_lo).any():
            ax.axvspan(lo, keep_lo, color="#C44E52", alpha=0.2, label="pruned")
        if (s > keep_hi).any():
            ax.axvspan(keep_hi, hi, color="#C44E52", alpha=0.2, label=None if (s < keep_lo).any() else "pruned")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("RAD = mean(F_k inside inpainted region) - mean(F_k in background)")
    ax.set_ylabel("channels")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def write_csv(path: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    """One flat row per (model x subset x post-processing), with the keys identifying the run."""
    if not rows:
        return
    fields = list(extra) + list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**extra, **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}})
    write_atomic(path, buf.getvalue())


def table_cells(rows: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per post-processing setting: a header and one line per subset, Base and DEAR side by side."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    index = {(r["model"], r["postprocess"], r["subset"]): r for r in rows}
    tables = {}
    for setting in dict.fromkeys(r["postprocess"] for r in rows):
        head = ["subset"] + [f"{MODEL_NAMES.get(m, m)} {k}" for m in models for k in METRICS]
        lines = []
        for subset in dict.fromkeys(r["subset"] for r in rows if r["postprocess"] == setting):
            lines.append([subset] + [f"{index[(m, setting, subset)][k]:.1f}" for m in models for k in METRICS])
        tables[setting] = (head, lines)
    return tables


def markdown_table(rows: list[dict[str, Any]]) -> str:
    out = []
    for setting, (head, lines) in table_cells(rows).items():
        out += [f"### {setting}\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join([f"**{c}**" if line[0] == "mean" else c for c in line]) + " |" for line in lines]
        out.append("")
    return "\n".join(out)


def print_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(160, Console().width))
    for setting, (head, lines) in table_cells(rows).items():
        table = Table(title=f"post-processing: {setting}")
        for i, name in enumerate(head):
            table.add_column(name.replace(" ", "\n", 1), justify="left" if i == 0 else "right")
        for line in lines:
            table.add_row(*line, style="bold" if line[0] == "mean" else None)
        console.print(table)
