"""Figures a person wants to look at; matplotlib with the Agg backend (no screen needed)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from mpl_runner.core.files import atomic_write_bytes
from mpl_runner.models import eval_mode

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

CLASS_COLORS = ("tab:blue", "tab:orange")


@torch.no_grad()
def predict_grid(model: torch.nn.Module, xlim, ylim, resolution: int = 200):
    """Predicted class over a grid of the plane, as (xx, yy, classes) on the CPU."""
    device = next(model.parameters()).device
    xs, ys = torch.linspace(*xlim, resolution), torch.linspace(*ylim, resolution)
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1).to(device)
    with eval_mode(model):
        classes = model(grid).argmax(dim=1).reshape(xx.shape).cpu()
    return xx, yy, classes


def plot_points(ax, x, y, labeled, title: str, model: torch.nn.Module | None = None) -> None:
    """Points coloured by true class; labeled ones as large black-edged markers; a model's regions behind."""
    pad = 0.5
    xlim = (float(x[:, 0].min()) - pad, float(x[:, 0].max()) + pad)
    ylim = (float(x[:, 1].min()) - pad, float(x[:, 1].max()) + pad)
    if model is not None:
        xx, yy, classes = predict_grid(model, xlim, ylim)
        ax.contourf(xx, yy, classes, levels=[-0.5, 0.5, 1.5], colors=CLASS_COLORS, alpha=0.25)
        ax.contour(xx, yy, classes, levels=[0.5], colors="k", linewidths=1)
    colors = [CLASS_COLORS[int(c)] for c in y]
    ax.scatter(x[:, 0], x[:, 1], c=colors, s=3)
    ax.scatter(x[labeled, 0], x[labeled, 1], c=[colors[i] for i in labeled], s=80, edgecolors="k", linewidths=1.5)
    ax.set(title=title, xlim=xlim, ylim=ylim, xticks=[], yticks=[])
    ax.set_aspect("equal")


def decision_boundaries(x, y, labeled, models: dict[str, torch.nn.Module]):
    """Ground truth and each model's decision regions side by side."""
    panels = [("ground truth", None), *models.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for ax, (title, model) in zip(axes[0], panels):
        plot_points(ax, x, y, labeled, title, model)
    fig.tight_layout()
    return fig


def confusion_figure(matrix, class_names=None, split: str = "test"):
    """Row-normalised confusion matrix of ``split`` (true class by row), per-class accuracy on the diagonal."""
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    names = class_names or [str(i) for i in range(len(counts))]
    # constrained layout fits the labels and title in the figure, in TensorBoard's rendering and in the PNG alike;
    # the minimum size holds the title with 2 classes
    fig, ax = plt.subplots(figsize=(max(3.6, 1.4 + 0.55 * len(names)), max(3.0, 1.2 + 0.5 * len(names))),
                           layout="constrained")
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * rates[i, j]:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xlabel="predicted", ylabel="true",
           title=f"{split} accuracy {100 * np.trace(counts) / counts.sum():.2f}% (row %)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    return fig


def image_grid(images, titles, columns: int = 8):
    """Images (N, 3, H, W, values in [0, 1]) with a title each."""
    rows = (len(images) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def save_png(fig, path: Path, dpi: int = 100) -> None:
    """Write ``fig`` atomically as a PNG and close it (pyplot keeps every open figure alive)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    plt.close(fig)
