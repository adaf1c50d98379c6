"""The dataset card (``README.md``) of a pushed zoo: Hub metadata, then what the zoo holds and
how to load it."""

from __future__ import annotations

from ..store import ZooStore
from ..store.summary import QUANTILES, describe_variants

CARD = "README.md"


def _size_category(n: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return label
    return "1M<n<10M"


def dataset_card(zoo: ZooStore, repo_id: str, store_name: str, license: str = "cc-by-4.0") -> str:
    """The dataset card: YAML metadata and a body with the spec, layout, members, metrics and a snippet."""
    from huggingface_hub import DatasetCardData

    summary = zoo.summary()
    spec = zoo.attrs.get("spec") or {}
    name = zoo.name
    data = DatasetCardData(
        license=license,
        pretty_name=f"weightzoo: {name}",
        tags=["weight-space-learning", "model-zoo", "weightzoo"],
        size_categories=[_size_category(len(zoo))],
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {name}",
        "",
        f"A zoo of {len(zoo):,} trained networks ({summary['architecture']}, "
        f"{'up to ' if summary['mixed_layouts'] else ''}{zoo.layout.size:,} parameters each, "
        f"checkpoints at epochs {zoo.epochs}), stored as `{store_name}` and made with "
        "weightzoo.",
        "",
        "## Load it",
        "",
        "```python",
        "import weightzoo",
        "",
        f'zoo = weightzoo.open_zoo("hf://datasets/{repo_id}")',
        "params = zoo.params()          # float32 [members, parameters], last checkpoint",
        "table = zoo.table()            # hyperparameters and final metrics (pandas)",
        "model = zoo.model(0)           # member 0 as a torch module",
        "```",
        "",
        f"or `weightzoo zoo pull {repo_id} --out zoos/`.",
        "",
        "## Members",
        "",
        f"- members: {len(zoo):,} done of {summary['members_total']:,}",
        f"- hyperparameters: {', '.join(summary['hparams']) or '-'}",
        f"- size: {summary['size_on_disk_bytes']:,} bytes ({summary['backend']})",
    ]
    if summary.get("variants"):
        lines.append(f"- task variants: {describe_variants(summary['variants'])}")
    if summary.get("base"):
        lines.append(f"- fine-tuned from {summary['base']} (`zoo.base_params()`, `zoo.task_vectors()`)")
    lines.append("")
    if summary["metric_quantiles"]:
        names = [name for name, _ in QUANTILES]
        header = f"| metric | {' | '.join(names)} |"
        lines += ["## Metrics (last checkpoint)", "", header, "|---" * (len(names) + 1) + "|"]
        for metric, q in summary["metric_quantiles"].items():
            cells = " | ".join(f"{q[k]:.4g}" for k in names)
            lines.append(f"| {metric} | {cells} |")
        lines.append("")
    lines += _architecture_lines(zoo)
    lines += ["## Parameter layout", "", "| tensor | shape | role | layer | offset |", "|---|---|---|---|---|"]
    lines += [f"| `{e.name}` | {list(e.shape)} | {e.role} | {e.layer} | {e.offset} |" for e in zoo.layout]
    lines += ["", "## Spec", ""]
    if spec:
        import yaml

        lines += ["```yaml", yaml.safe_dump(spec, sort_keys=False).rstrip(), "```"]
    else:
        lines.append(f"Imported ({(zoo.attrs.get('source') or {}).get('format', 'unknown source')}); no build spec.")
    return "\n".join(lines) + "\n"


def _architecture_lines(zoo: ZooStore) -> list[str]:
    """The card's architecture section: the family, its arguments and the layer table."""
    arch = zoo.architecture
    if not arch:
        return []
    lines = ["## Architecture", "", f"Family `{arch.get('family', 'custom')}`"]
    if arch.get("args"):
        lines[-1] += ", arguments " + ", ".join(f"`{k}={v}`" for k, v in arch["args"].items())
    overrides = zoo.attrs.get("arch_overrides") or []
    if overrides:
        lines[-1] += f"; per member: {', '.join(overrides)}"
    lines += ["", "| # | layer | settings |", "|---|---|---|"]
    for i, layer in enumerate(arch.get("layers", [])):
        settings = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "type")
        lines.append(f"| {i} | {layer.get('type')} | {settings} |")
    return [*lines, ""]
