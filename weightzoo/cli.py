"""The ``weightzoo`` command: a thin shell that parses arguments and calls library functions.

Errors a user can cause print one line (``error: ...``) and exit 2; ``zoo verify`` exits 1
when it finds damage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .errors import SpecError, WeightZooError

app = typer.Typer(
    help="Build, store, share and learn from zoos of trained neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Build, inspect, verify, import, export, convert and share zoos.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
metanet_app = typer.Typer(help="Train, evaluate and share metanetworks on zoos.", no_args_is_help=True)
app.add_typer(metanet_app, name="metanet")
generate_app = typer.Typer(help="Train weight generators (D2NWG, p-diff) and sample members.", no_args_is_help=True)
app.add_typer(generate_app, name="generate")


ZOO_ARG = "a store (*.zarr, *.h5) or hf://datasets/USER/REPO[@REVISION] (pulled into the HF cache)"
PUSH_REVISION = typer.Option(None, "--revision", help="branch to push to (created if missing)")
PUSH_MESSAGE = typer.Option(None, "--message", "-m", help="commit message")


def _progress(quiet: bool) -> bool:
    """Show progress bars only on a terminal and without --quiet."""
    return not quiet and sys.stderr.isatty()


@zoo_app.command("info")
def zoo_info(
    path: str = typer.Argument(..., help=ZOO_ARG),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
) -> None:
    """Members done/total, architecture, parameters, checkpoints, size on disk, metric quantiles."""
    from .zoo.opener import open_zoo
    from .zoo.store import format_summary

    with open_zoo(path) as zoo:
        summary = zoo.summary()
    typer.echo(json.dumps(summary) if as_json else format_summary(summary))


@zoo_app.command("verify")
def zoo_verify(path: str = typer.Argument(..., help=ZOO_ARG)) -> None:
    """Check every chunk's checksum; exit 1 and list damaged members if any."""
    from .zoo.opener import open_zoo

    with open_zoo(path) as zoo:
        report = zoo.verify()
    if report.ok:
        typer.echo(f"{path}: ok ({report.checked_chunks} chunks checked, {len(zoo)} members)")
        return
    for line in report.problems:
        typer.echo(f"{path}: {line}", err=True)
    typer.echo(f"{path}: {len(report.damaged_members)} damaged members: {report.damaged_members}")
    raise typer.Exit(1)


@zoo_app.command("eval")
def zoo_eval(
    path: str = typer.Argument(..., help=ZOO_ARG),
    members: str = typer.Option("all", "--members", help="all, or indices and ranges like 0,3,10-19"),
    weights: Path | None = typer.Option(
        None, "--weights", help="a state_dict file (.safetensors, .pt) of the members' architecture to evaluate "
        "on each member's task (default: each member's stored weights)"
    ),
    epoch: int = typer.Option(-1, "--checkpoint", help="stored checkpoint to evaluate (-1: the last)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
) -> None:
    """Evaluate weights on members' tasks: the metrics the builder records (loss, accuracy or PSNR)."""
    import numpy as np

    from .zoo.importers.state_dicts import load_flat
    from .zoo.opener import open_zoo
    from .zoo.selection import parse_members

    with open_zoo(path) as zoo:
        idx = parse_members(members, len(zoo))
        if weights is None:
            params = zoo.params(idx, epoch)
        else:
            flat = load_flat(weights, zoo.member_layout(idx[0]))
            params = np.zeros((1, zoo.layout.size), dtype=np.float32)  # padded where members differ in size
            params[0, : flat.numel()] = flat.numpy()
        metrics = zoo.evaluate(params, idx)
    if as_json:
        typer.echo(json.dumps({"members": idx, "metrics": {k: v.tolist() for k, v in metrics.items()}}))
        return
    names = list(metrics)
    typer.echo(f"{'member':>8}" + "".join(f"{n:>12}" for n in names))
    for row, i in enumerate(idx):
        typer.echo(f"{i:>8}" + "".join(f"{metrics[n][row]:>12.4g}" for n in names))


@zoo_app.command("import")
def zoo_import(
    src: Path,
    out: Path,
    fmt: str = typer.Option(..., "--format", "-f", help="smallcnnzoo | modelzoo | inr-folder | state-dicts"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace OUT if it exists"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Import a zoo in an external format into a weightzoo store (OUT: *.zarr or *.h5)."""
    from .zoo.importers import import_zoo

    report = import_zoo(fmt, src, out, overwrite=overwrite, progress=_progress(quiet))
    typer.echo(f"{out}: imported {report.imported} members from {src} ({fmt})")
    for line in report.skipped:
        typer.echo(f"  skipped: {line}")


@zoo_app.command("export")
def zoo_export(
    path: str = typer.Argument(..., help=ZOO_ARG),
    outdir: Path = typer.Argument(..., help="folder to write"),
    epoch: int = typer.Option(-1, help="checkpoint to export (-1: the last)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Write one safetensors file per member plus a members table."""
    from .zoo.opener import open_zoo
    from .zoo.transfer import export_zoo

    with open_zoo(path) as zoo:
        out = export_zoo(zoo, outdir, epoch=epoch, overwrite=overwrite, progress=_progress(quiet))
    typer.echo(f"{out}: exported")


@zoo_app.command("convert")
def zoo_convert(
    src: str = typer.Argument(..., help=ZOO_ARG),
    dst: Path = typer.Argument(..., help="the new store (*.zarr or *.h5)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Convert between Zarr and HDF5 (bit-exact)."""
    from .zoo.opener import open_zoo
    from .zoo.transfer import convert_zoo

    with open_zoo(src) as zoo:
        out = convert_zoo(zoo, dst, overwrite=overwrite, progress=_progress(quiet))
    typer.echo(f"{src} -> {out}")


@zoo_app.command("build")
def zoo_build(
    spec: str = typer.Argument(..., help="a spec YAML file or the name of a shipped config"),
    out: Path = typer.Option(..., "--out", "-o", help="the store to build (*.zarr or *.h5)"),
    backend: str | None = typer.Option(None, help="zarr | hdf5 (default: from --out's suffix)"),
    members: int | None = typer.Option(None, help="build this many members instead of the spec's"),
    executor: str = typer.Option("local", help="local | dask"),
    workers: int | None = typer.Option(None, help="dask: start a LocalCluster with N workers"),
    scheduler: str | None = typer.Option(None, help="dask: address of an existing scheduler"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a store of a different spec"),
    allow_mixed_numerics: bool = typer.Option(
        False, "--allow-mixed-numerics", help="resume or take workers' results on another numeric path"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a zoo from a spec; re-running the same command resumes an interrupted build."""
    from .zoo.backends import resolve_store_path
    from .zoo.build import build_zoo

    report = build_zoo(
        spec,
        resolve_store_path(out, backend),
        members=members,
        overwrite=overwrite,
        executor=executor,
        workers=workers,
        scheduler=scheduler,
        device=device,
        progress=_progress(quiet),
        allow_mixed_numerics=allow_mixed_numerics,
    )
    if report.trained == 0:
        typer.echo(f"{report.path}: complete, nothing to do ({report.members} members)")
    else:
        typer.echo(
            f"{report.path}: trained {report.trained} members in {report.seconds:.1f} s "
            f"({report.members_per_s * 60:.0f} members/min); {report.already_done + report.trained}/"
            f"{report.members} done"
        )


@zoo_app.command("push")
def zoo_push(
    path: Path,
    repo_id: str,
    private: bool = typer.Option(False, "--private", help="create the dataset repo private"),
    revision: str | None = PUSH_REVISION,
    message: str | None = PUSH_MESSAGE,
    license: str = typer.Option("cc-by-4.0", "--license", help="license in the dataset card"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Upload a zoo to a Hugging Face dataset repo (only files that differ; a re-run resumes)."""
    from .zoo.hub import push_zoo

    result = push_zoo(
        path, repo_id, private=private, revision=revision, message=message, license=license, progress=_progress(quiet)
    )
    if not result.changed:
        typer.echo(f"{repo_id}@{result.revision}: up to date, nothing pushed")
        return
    typer.echo(
        f"{repo_id}@{result.revision}: pushed {len(result.uploaded)} files in {len(result.commits)} commit(s)"
        + (f", deleted {len(result.deleted)}" if result.deleted else "")
        + f"; {result.url}"
    )


@zoo_app.command("pull")
def zoo_pull(
    repo_id: str,
    revision: str | None = typer.Option(None, "--revision", help="branch, tag or commit (default: main)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="folder to put the store in (default: HF cache)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a store of the same name in --out"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Download a zoo pushed with `zoo push` and check every file against its manifest."""
    from .zoo.hub import pull_zoo

    store = pull_zoo(repo_id, revision=revision, out=out, overwrite=overwrite, progress=_progress(quiet))
    typer.echo(f"{repo_id}: {store} (checksums ok)")


@zoo_app.command("configs")
def zoo_configs() -> None:
    """List the zoo specs shipped with weightzoo."""
    from .zoo.spec import load_spec, shipped_configs

    for name in shipped_configs():
        spec = load_spec(name)
        typer.echo(f"{name:<22} {spec.members:>6} members  {spec.task:<12} {spec.description}")


def _model_args(items: list[str]) -> dict:
    """``key=value`` pairs; values are JSON when they parse (numbers, lists), strings otherwise."""

    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--arg {item!r}: write key=value, e.g. --arg hidden=128 or --arg 'hidden=[64,64]'")
        args[key] = _value(value)
    return args


def _value(text: str):
    """A command-line value: JSON when it parses (numbers, true/false, lists), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _format_scores(scores: dict) -> str:
    return "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items())


@metanet_app.command("train")
def metanet_train(
    zoo: str = typer.Option(..., "--zoo", help="the zoo to learn from (*.zarr, *.h5 or hf://datasets/USER/REPO)"),
    task: str = typer.Option(..., "--task", help="predict:<metric or numeric column> | classify:<column>"),
    model: str = typer.Option(..., "--model", help="dws | gmn | statnn | mlp | deepsets"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (model.safetensors + config.json)"),
    epochs: int = typer.Option(100, help="most epochs; training stops early when validation stalls"),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    patience: int = typer.Option(20, help="epochs without validation improvement before stopping"),
    seed: int = typer.Option(0, help="seed of the split and of the model's initialization"),
    epoch: int = typer.Option(-1, "--checkpoint", help="zoo checkpoint epoch to read (-1: the last)"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    arg: list[str] = typer.Option([], "--arg", help="model argument key=value (repeatable)"),
    augment: str | None = typer.Option(
        None, "--augment", help="weight-space augmentation of training batches, e.g. perm,noise:0.05,mixup:0.5"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a metanetwork; the best epoch on the validation split is kept and scored on test."""
    from .metanet.data import SplitSpec
    from .metanet.train import TrainOptions, check_device, train_metanet

    options = TrainOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed, device=check_device(device),
        augment=augment,
    )  # fmt: skip
    run = train_metanet(
        zoo,
        task,
        model,
        out,
        model_args=_model_args(arg),
        options=options,
        split=SplitSpec(seed=seed),
        epoch=epoch,
        progress=_progress(quiet),
    )
    hist = run.config["history"]
    typer.echo(
        f"{out}: {model} on {task}, best epoch {hist['best_epoch']}/{hist['epochs_run']} "
        f"({hist['seconds']:.1f} s, {hist['members_per_s']:.0f} members/s)"
    )
    for split, scores in run.config["scores"].items():
        typer.echo(f"  {split:<5} {_format_scores(scores)}")


@metanet_app.command("push")
def metanet_push(
    run_dir: Path,
    repo_id: str,
    private: bool = typer.Option(False, "--private", help="create the model repo private"),
    revision: str | None = PUSH_REVISION,
    message: str | None = PUSH_MESSAGE,
) -> None:
    """Upload a saved metanet run or weight generator (weights, config.json, card) to a Hub model repo."""
    from .metanet.hub import push_run

    result = push_run(run_dir, repo_id, private=private, revision=revision, message=message)
    state = f"pushed ({result.commits[0][:12]})" if result.changed else "up to date, nothing pushed"
    typer.echo(f"{repo_id}@{result.revision}: {state}; {result.url}")


@metanet_app.command("import")
def metanet_import(
    source: str = typer.Argument(..., help="a model repo id (USER/REPO) or a run directory"),
    zoo: str = typer.Option(..., "--zoo", help="the zoo whose members to predict (a store or hf://datasets/...)"),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="the table to write (*.csv)"),
    revision: str | None = typer.Option(None, "--revision", help="model repo branch, tag or commit"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
) -> None:
    """Load a metanet from the Hub (or a folder) and write its predictions for every member of a zoo."""
    from .metanet.hub import import_predictions
    from .metanet.train import check_device

    table = import_predictions(source, zoo, out, revision=revision, device=check_device(device))
    typer.echo(f"{out}: {len(table)} predictions from {source}")


@metanet_app.command("eval")
def metanet_eval(
    run_dir: Path,
    zoo: str = typer.Option(..., "--zoo", help="a zoo of an architecture the run can read"),
    split: str = typer.Option("test", help="train | val | test (the run's split rule) | all"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
) -> None:
    """Score a trained run on a split of a zoo (Kendall tau and R^2, or accuracy)."""
    from .metanet.run import load_run
    from .metanet.train import check_device

    scores = load_run(run_dir, device=check_device(device)).evaluate(zoo, split)
    typer.echo(json.dumps(scores) if as_json else f"{run_dir} on {zoo} [{split}]: {_format_scores(scores)}")


@app.command("align")
def align_cmd(
    zoo: str = typer.Argument(..., help=ZOO_ARG),
    a: int = typer.Argument(..., help="member A (the reference; lambda = 0)"),
    b: int = typer.Argument(..., help="member B (permuted to A; lambda = 1)"),
    method: list[str] = typer.Option(
        [], "--method", help="weight | activation (repeatable; default both), beside the naive curve"
    ),
    steps: int = typer.Option(11, "--steps", help="points on the line from A to B, both ends included"),
    epoch: int = typer.Option(-1, "--checkpoint", help="stored checkpoint of both members (-1: the last)"),
    seed: int = typer.Option(0, "--seed", help="seeds weight matching's group order"),
    plot: Path | None = typer.Option(None, "--plot", help="write the curves as a PNG"),
    out: Path | None = typer.Option(None, "--out", help="write the curves and barriers as JSON"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of the barrier table"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
) -> None:
    """Loss and accuracy barriers between two members: naive, weight-matched, activation-matched."""
    from .metanet.connectivity import member_connectivity
    from .metanet.interpolate import lambda_grid
    from .zoo.opener import open_zoo

    lambdas = lambda_grid(steps)
    with open_zoo(zoo) as store:
        report = member_connectivity(
            store, a, b, methods=method or ("weight", "activation"), lambdas=lambdas, epoch=epoch, seed=seed,
            device=_device(device),
        )  # fmt: skip
    _write_outputs(report.to_dict(), out, plot, lambda p: _plot_report(report, p))
    typer.echo(json.dumps(report.to_dict()) if as_json else report.format())


def _device(device: str) -> str:
    from .metanet.train import check_device

    return check_device(device)


def _plot_report(report, path: Path) -> Path:
    from .metanet.plots import plot_curves

    return plot_curves(report.curves, path, title=f"{report.zoo}: members {report.a} and {report.b}")


def _write_outputs(result: dict, out: Path | None, plot: Path | None, draw) -> None:
    """The JSON (``out``) and the figure (``plot``) of a result, each written whole or not at all."""
    from ._fs import ensure_writable, staged

    for path in (p for p in (out, plot) if p is not None):
        ensure_writable(path)
    if out is not None:
        with staged(out, overwrite=True) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    if plot is not None:
        draw(plot)


MERGE_METHODS = (
    "linear, task_arithmetic, ties, dare_linear, dare_ties, della, della_linear, breadcrumbs, breadcrumbs_ties, "
    "slerp, model_stock, uniform_soup, greedy_soup"
)


@app.command("merge")
def merge_cmd(
    files: list[Path] = typer.Argument(None, help="state-dict files (.safetensors, .pt) of one architecture"),
    zoo: str | None = typer.Option(None, "--zoo", help="merge this zoo's members (or check FILES against it)"),
    members: str | None = typer.Option(None, "--members", help="members to merge (files: whose tasks --eval uses)"),
    where: str | None = typer.Option(None, "--where", help="a pandas filter of the zoo's table, e.g. \"lr < 0.01\""),
    method: str = typer.Option(..., "--method", help=MERGE_METHODS),
    base: Path | None = typer.Option(None, "--base", help="the base, a state-dict file (zoo: its recorded base)"),
    weight: str | None = typer.Option(None, "--weight", help="one weight, or one per model: 0.5,0.3,0.2"),
    density: float | None = typer.Option(None, "--density", help="fraction of task-vector entries kept, in (0, 1]"),
    lam: float | None = typer.Option(None, "--lambda", help="scale of the merged task vector"),
    gamma: float | None = typer.Option(None, "--gamma", help="breadcrumbs: fraction of largest entries removed"),
    epsilon: float | None = typer.Option(None, "--epsilon", help="della: keep probabilities span density +/- epsilon"),
    t: float | None = typer.Option(None, "--t", help="slerp: 0 gives the first model, 1 the second"),
    param: list[str] = typer.Option([], "--param", help="any other method parameter as key=value (repeatable)"),
    align: str | None = typer.Option(None, "--align", help="weight | activation: permute the models to one another"),
    seed: int = typer.Option(0, "--seed", help="seeds DARE's drops and alignment"),
    epoch: int = typer.Option(-1, "--checkpoint", help="stored checkpoint of zoo members (-1: the last)"),
    out: Path = typer.Option(..., "--out", "-o", help="merged.safetensors, or with --sweep a store (*.zarr, *.h5)"),
    evaluate: bool = typer.Option(False, "--eval", help="report the merged model on each source member's task"),
    sweep_grid: list[str] = typer.Option([], "--sweep", help="NAME=V1,V2,... a grid to sweep (repeatable)"),
    plot: Path | None = typer.Option(None, "--plot", help="with --sweep: the PNG (default: beside --out)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
) -> None:
    """Merge zoo members or state-dict files (task arithmetic, TIES, DARE, breadcrumbs, SLERP, soups, ...)."""
    from ._fs import ensure_writable
    from .metanet.merging import merge_models, parse_grid, sweep
    from .metanet.sources import from_files, from_zoo, write_safetensors
    from .zoo.opener import open_zoo
    from .zoo.selection import parse_members, select_members

    params = _merge_params(weight, density, lam, gamma, epsilon, t, param)
    grid = parse_grid(sweep_grid) if sweep_grid else None
    ensure_writable(out)
    if not files and zoo is None:
        raise typer.BadParameter("give state-dict FILES or --zoo PATH with --members/--where")
    store = open_zoo(zoo) if zoo is not None else None
    try:
        if files:
            tasks = parse_members(members, len(store)) if (store is not None and members) else []
            models = from_files(files, zoo=store, members=tasks, base=base)
        else:
            tasks = select_members(store, members, where)
            models = from_zoo(store, tasks, epoch=epoch, base=base)
        if grid is not None:
            plot = plot or out.with_suffix(".png")
            table = sweep(models, method, grid, out, align=align, seed=seed, eval_members=tasks, plot=plot, **params)
            typer.echo(json.dumps(table) if as_json else _format_sweep(out, plot, table))
            return
        result = merge_models(models, method, align=align, seed=seed, evaluate=evaluate, eval_members=tasks, **params)
    finally:
        if store is not None:
            store.close()
    write_safetensors(out, models.layout, result.flat, result.metadata())
    if as_json:
        typer.echo(json.dumps(result.to_dict() | {"out": str(out)}))
        return
    typer.echo(f"{out}: {method} of {len(models)} models" + (f", aligned by {align}" if align else ""))
    if result.chosen is not None:
        kept = [models.names[i] for i in result.chosen]
        typer.echo(f"  greedy soup kept {len(kept)} of {len(models)}: {kept}")
    if result.metrics:
        names = list(result.metrics)
        typer.echo(f"{'member':>8}" + "".join(f"{n:>12}" for n in names))
        for row, i in enumerate(result.members):
            typer.echo(f"{i:>8}" + "".join(f"{result.metrics[n][row]:>12.4g}" for n in names))


def _merge_params(weight, density, lam, gamma, epsilon, t, extra: list[str]) -> dict:
    """Method parameters given on the command line (mergekit's names), numbers parsed."""
    from .errors import MergeError

    params: dict = {}
    if weight is not None:
        values = [float(v) for v in weight.split(",")]
        params["weight"] = values[0] if len(values) == 1 else values
    for name, value in (("density", density), ("lambda", lam), ("gamma", gamma), ("epsilon", epsilon), ("t", t)):
        if value is not None:
            params[name] = value
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise MergeError(f"--param {item!r}: write key=value")
        params[key] = _value(value)
    return params


def _format_sweep(out: Path, plot: Path, table: list[dict]) -> str:
    keys = list(table[0])
    lines = [f"{out}: {len(table)} settings (plot: {plot})", "".join(f"{k:>14}" for k in keys)]
    lines += ["".join(f"{row[k]:>14.4g}" for k in keys) for row in table]
    return "\n".join(lines)


@generate_app.command("train")
def generate_train(
    zoo: str = typer.Option(..., "--zoo", help="the zoo to learn from (*.zarr, *.h5 or hf://datasets/USER/REPO)"),
    out: Path = typer.Option(..., "--out", "-o", help="generator directory (model.safetensors + config.json)"),
    condition: str = typer.Option("dataset", "--condition", help="dataset (D2NWG) | none (p-diff)"),
    layers: list[str] = typer.Option([], "--layers", help="generate only these modules, e.g. layers.4 (repeatable)"),
    members: str | None = typer.Option(None, "--members", help="training members: indices and ranges like 0,3,10-19"),
    where: str | None = typer.Option(None, "--where", help="training members: a filter of the zoo's table"),
    epoch: int = typer.Option(-1, "--checkpoint", help="zoo checkpoint epoch to learn from (-1: the last)"),
    align: bool = typer.Option(True, "--align/--no-align", help="weight-match members to the first one first"),
    chunk: int = typer.Option(64, "--chunk", help="weight values per token"),
    latent_dim: int = typer.Option(64, "--latent-dim", help="latent values per token"),
    ae_epochs: int = typer.Option(300, "--ae-epochs", help="autoencoder training epochs"),
    epochs: int = typer.Option(500, "--epochs", help="diffusion training epochs"),
    contrastive_epochs: int = typer.Option(0, "--contrastive-epochs", help="dataset/latent contrastive epochs"),
    per_class: int = typer.Option(10, "--per-class", help="samples per class in a conditioning set"),
    pool: str = typer.Option("set", "--pool", help="dataset embedding: set (one vector) | label (a token per output)"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a weight generator on a zoo's members and save it."""
    from .metanet.diffusion import AutoencoderConfig, EncoderConfig, FitOptions, GeneratorConfig, train_generator
    from .metanet.train import check_device
    from .zoo.opener import open_zoo
    from .zoo.selection import select_members

    config = GeneratorConfig(
        condition=condition, layers=tuple(layers) or None, chunk=chunk, align=align,
        autoencoder=AutoencoderConfig(latent_dim=latent_dim), encoder=EncoderConfig(per_class=per_class, pool=pool),
        autoencoder_fit=FitOptions(epochs=ae_epochs, seed=seed), diffusion_fit=FitOptions(epochs=epochs, seed=seed),
        contrastive_epochs=contrastive_epochs,
    )  # fmt: skip
    with open_zoo(zoo) as z:
        chosen = select_members(z, members, where) if members is not None or where is not None else None
        trained = train_generator(
            z, out, members=chosen, config=config, epoch=epoch, device=check_device(device), progress=_progress(quiet)
        )
    hist = trained.generator.meta["history"]
    typer.echo(
        f"{out}: {condition} generator on {len(trained.generator.meta['members'])} members of "
        f"{trained.generator.meta['zoo']} ({trained.seconds:.1f} s; autoencoder loss {hist['autoencoder_loss']:.4f}, "
        f"diffusion loss {hist['diffusion_loss']:.4f})"
    )


@generate_app.command("sample")
def generate_sample(
    run: str = typer.Argument(..., help="a generator directory or a model repo id (USER/REPO)"),
    out: Path = typer.Option(..., "--out", "-o", help="the zoo of generated members to write (*.zarr or *.h5)"),
    task: str | None = typer.Option(None, "--task", help="a task variant, e.g. 'classes=0,3,5,7,9 label_perm=2'"),
    like_member: int | None = typer.Option(None, "--like-member", help="the task of this member of the zoo"),
    n: int = typer.Option(16, "--n", help="members to generate"),
    zoo: str | None = typer.Option(None, "--zoo", help="the zoo whose task to use (default: the training zoo)"),
    seed: int = typer.Option(0, "--seed", help="seeds the conditioning set and the sampler"),
    candidates: int | None = typer.Option(
        None, "--candidates", help="draw this many and keep the --n with the lowest loss on the conditioning set"
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace --out if it exists"),
    revision: str | None = typer.Option(None, "--revision", help="model repo branch, tag or commit"),
    device: str = typer.Option("cpu", help="cpu | cuda"),
) -> None:
    """Generate members for a task (no training) and write them, with their metrics, as a zoo."""
    import numpy as np

    from .metanet.diffusion import generate_members, load_generator
    from .metanet.train import check_device

    device = check_device(device)
    generator = load_generator(run, device=device, revision=revision)
    result = generate_members(
        generator, out, zoo=zoo, task=task, like_member=like_member, n=n, seed=seed, candidates=candidates,
        overwrite=overwrite, device=device,
    )  # fmt: skip
    acc = result.metrics.get("test_acc")
    summary = "" if acc is None else f"test_acc median {np.median(acc):.4f} (min {acc.min():.4f}, max {acc.max():.4f})"
    typer.echo(f"{out}: {n} generated members for {result.task}; {summary}")


generate_app.command("push")(metanet_push)  # one upload for both: the folder's config.json says what it holds

@app.command("demo")
def demo(
    out: Path = typer.Option(Path("demo-out"), help="directory for the demo zoo"),
    spec: str = typer.Option("mnist1d-mlp", help="spec file or shipped config to build"),
    members: int | None = typer.Option(None, help="build this many members instead of the spec's"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Build the default zoo, then verify, convert and serve it (the main job, end to end)."""
    from .demo import run_demo

    run_demo(out, spec=spec, members=members, progress=_progress(quiet), echo=typer.echo)


@app.callback()
def _root(version: bool | None = typer.Option(None, "--version", help="print the version and exit")) -> None:
    if version:
        from ._version import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning WeightZooError into one line and exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)  # click returns an Exit's code here
    except WeightZooError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
