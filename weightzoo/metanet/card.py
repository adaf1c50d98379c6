"""The model card of a metanet run on the Hub: what it reads, what it predicts, the zoo it
learned from and its scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import ModelCard


def _metric_rows(scores: dict[str, dict[str, float]]) -> list[str]:
    names = sorted({k for split in scores.values() for k in split})
    rows = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for split, values in scores.items():
        cells = " | ".join(f"{values[n]:.4f}" if isinstance(values.get(n), float) else "-" for n in names)
        rows.append(f"| {split} | {cells} |")
    return rows


def model_card(cfg: dict[str, Any], repo_id: str | None = None) -> ModelCard:
    """The model card of a run with config ``cfg``: the metanet, its task, the zoo it was trained
    on and its metrics."""
    from huggingface_hub import ModelCard, ModelCardData

    zoo = cfg.get("zoo", {})
    data = ModelCardData(
        library_name="weightzoo",
        license="apache-2.0",
        tags=sorted({"weight-space-learning", "metanetwork", "weightzoo", str(cfg["model"])}),
    )
    name = repo_id or "USER/REPO"
    task = cfg["task"]
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {cfg['model']} metanetwork: {'predict' if task.get('kind') == 'regression' else 'classify'}:"
        f"{task.get('column', '')}",
        "",
        f"A `{cfg['model']}` metanetwork (weightzoo) that reads the weights of trained networks and "
        f"{'predicts' if task.get('kind') == 'regression' else 'classifies'} `{task.get('column', '')}`.",
        "",
        "## Training zoo",
        "",
        f"- zoo: `{zoo.get('name', '?')}` ({zoo.get('members', '?')} members, architecture "
        f"`{(zoo.get('architecture') or {}).get('family', 'custom')}`)",
        f"- split: {cfg.get('split')}",
        f"- model arguments: `{cfg.get('model_args')}`",
        "",
        "## Metrics",
        "",
        *_metric_rows(cfg.get("scores", {})),
        "",
        "## Use it",
        "",
        "```python",
        "from weightzoo import open_zoo",
        "from weightzoo.metanet import MetanetRun",
        "",
        f'run = MetanetRun.from_pretrained("{name}")',
        'predictions = run.predict(open_zoo("zoo.zarr"))',
        "```",
        "",
        f"or `weightzoo metanet import {name} --zoo zoo.zarr --out predictions.csv`.",
        "",
    ]
    return ModelCard("\n".join(lines))
