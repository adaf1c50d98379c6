"""PNG figures of weight operations, drawn with matplotlib (Agg, no display needed) and written
through the staged-write helper: interpolation curves of ``weightzoo align`` and merge sweeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .._fs import ensure_writable, staged
from .interpolate import Curve, higher_is_better


def _figure(panels: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8), squeeze=False)
    return plt, fig, axes[0]


def _save(plt, fig, path: str | Path) -> Path:
    path = ensure_writable(path)
    fig.tight_layout()
    with staged(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def plot_curves(curves: Mapping[str, Curve], path: str | Path, title: str = "") -> Path:
    """Loss and score along each path (train dashed, test solid), one colour per curve."""
    metrics = list(next(iter(curves.values())).metrics)
    kinds = [k for k in ("loss", "score") if any(higher_is_better(m) == (k == "score") for m in metrics)]
    plt, fig, axes = _figure(len(kinds))
    for ax, kind in zip(axes, kinds):
        for colour, (name, curve) in enumerate(curves.items()):
            for metric, values in curve.metrics.items():
                if higher_is_better(metric) != (kind == "score"):
                    continue
                style = "--" if metric.startswith("train") else "-"
                label = f"{name} {metric} (barrier {curve.barriers[metric]:.3f})"
                ax.plot(curve.lambdas, values, style, color=f"C{colour}", marker=".", label=label)
        _label(ax, "λ  (0: member A, 1: member B)", kind)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_sweep(
    values: Sequence[Mapping[str, float]], x: str, y: Sequence[str], path: str | Path, title: str = "",
    others: Sequence[str] = (),
) -> Path:
    """Metrics ``y`` of merge settings against the swept parameter ``x``, one line per metric and
    setting of the ``others`` swept parameters."""
    plt, fig, axes = _figure(1)
    lines: dict[tuple, list[Mapping[str, float]]] = {}
    for v in values:
        lines.setdefault(tuple(v[k] for k in others), []).append(v)
    for key, rows in lines.items():
        rows = sorted(rows, key=lambda r: r[x])
        fixed = ", ".join(f"{k}={val:g}" for k, val in zip(others, key))
        for metric in y:
            label = f"{metric} ({fixed})" if fixed else metric
            axes[0].plot([r[x] for r in rows], [r[metric] for r in rows], marker="o", label=label)
    _label(axes[0], x, "mean over the source members' tasks")
    if title:
        axes[0].set_title(title, fontsize=10)
    return _save(plt, fig, path)


def _label(ax, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
