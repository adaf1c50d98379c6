"""What ``weightzoo zoo info`` reports about a zoo, and its text form."""

from __future__ import annotations

from typing import Any

import numpy as np

QUANTILES = (("min", 0), ("q25", 0.25), ("median", 0.5), ("q75", 0.75), ("max", 1))


def metric_quantiles(metrics: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Quantiles of each metric's finite values (metrics without any are left out)."""
    out = {}
    for name, values in metrics.items():
        values = values.astype(np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            out[name] = {q: float(np.quantile(values, p)) for q, p in QUANTILES}
    return out


def summarize(zoo: Any) -> dict[str, Any]:
    """What ``weightzoo zoo info`` reports about ``zoo`` (a ZooStore), as plain data."""
    arch = zoo.architecture or {}
    numerics = zoo.numerics
    return {
        "path": str(zoo.path),
        "backend": zoo.backend_name,
        "members_done": len(zoo),
        "members_total": zoo.capacity,
        "architecture": arch.get("family", "custom" if arch else "unknown"),
        "params_per_member": zoo.layout.size,
        "mixed_layouts": zoo.mixed,
        "checkpoint_epochs": zoo.epochs,
        "hparams": zoo.hparam_names,
        "size_on_disk_bytes": zoo.size_on_disk(),
        "numerics": str(numerics) if numerics is not None else None,
        "variants": {k: len(set(zoo.column(k).tolist())) for k in zoo.hparam_names if k.startswith("task.")},
        "base": describe_base(zoo.attrs.get("base")),
        "metric_quantiles": metric_quantiles({name: zoo.metric(name) for name in zoo.metric_names}),
    }


def describe_variants(variants: dict[str, int]) -> str:
    """A zoo's task variant columns and how many distinct values each holds, in a line."""
    return ", ".join(f"{k} ({n} distinct)" for k, n in variants.items())


def describe_base(base: dict[str, Any] | None) -> str | None:
    """A fine-tuned zoo's base in a line: the pretraining run, or the base zoo's members."""
    if not base:
        return None
    pre = base.get("pretrain")
    if pre:
        acc = pre.get("metrics", {}).get("test_acc")
        score = f", test accuracy {acc:.3f}" if acc is not None else ""
        return f"one base pretrained on {pre['task']} for {pre['epochs']} epochs{score}"
    members = base.get("members", [])
    shown = ", ".join(map(str, members[:8])) + (", ..." if len(members) > 8 else "")
    return f"member{'s' if len(members) > 1 else ''} {shown} of {base.get('zoo')} at epoch {base.get('epoch')}"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_summary(s: dict[str, Any]) -> str:
    """A ``ZooStore.summary()`` as the aligned text ``weightzoo zoo info`` prints."""
    lines = [
        f"zoo            {s['path']} ({s['backend']})",
        f"members        {s['members_done']:,} done / {s['members_total']:,} total",
        f"architecture   {s['architecture']}",
        f"parameters     {'up to ' if s.get('mixed_layouts') else ''}{s['params_per_member']:,} per member",
        f"checkpoints    epochs {s['checkpoint_epochs']}",
        f"size on disk   {human_bytes(s['size_on_disk_bytes'])}",
        f"hparams        {', '.join(s['hparams']) or '-'}",
    ]
    if s.get("numerics"):
        lines.append(f"trained on     {s['numerics']}")
    if s.get("variants"):
        lines.append(f"task variants  {describe_variants(s['variants'])}")
    if s.get("base"):
        lines.append(f"fine-tuned     from {s['base']}")
    if s["metric_quantiles"]:
        lines.append(f"{'metric (last checkpoint)':<26}" + "".join(f"{q:>11}" for q, _ in QUANTILES))
        for name, q in s["metric_quantiles"].items():
            lines.append(f"  {name:<24}" + "".join(f"{q[k]:>11.4g}" for k, _ in QUANTILES))
    return "\n".join(lines)
