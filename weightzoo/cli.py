"""The ``weightzoo`` command: a thin shell that parses arguments and calls library functions.

Errors a user can cause print one line (``error: ...``) and exit 2; ``zoo verify`` exits 1
when it finds damage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .errors import WeightZooError

app = typer.Typer(
    help="Build, store, share and learn from zoos of trained neural networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
zoo_app = typer.Typer(help="Inspect, verify, import, export and convert zoos.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


def _progress(quiet: bool) -> bool:
    """Show progress bars only on a terminal and without --quiet."""
    return not quiet and sys.stderr.isatty()


@zoo_app.command("info")
def zoo_info(path: Path, as_json: bool = typer.Option(False, "--json", help="print JSON instead of text")) -> None:
    """Members done/total, architecture, parameters, checkpoints, size on disk, metric quantiles."""
    from .zoo.store import format_summary, open_zoo

    with open_zoo(path) as zoo:
        summary = zoo.summary()
    typer.echo(json.dumps(summary) if as_json else format_summary(summary))


@zoo_app.command("verify")
def zoo_verify(path: Path) -> None:
    """Check every chunk's checksum; exit 1 and list damaged members if any."""
    from .zoo.store import open_zoo

    with open_zoo(path) as zoo:
        report = zoo.verify()
    if report.ok:
        typer.echo(f"{path}: ok ({report.checked_chunks} chunks checked, {len(zoo)} members)")
        return
    for line in report.problems:
        typer.echo(f"{path}: {line}", err=True)
    typer.echo(f"{path}: {len(report.damaged_members)} damaged members: {report.damaged_members}")
    raise typer.Exit(1)


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
    path: Path,
    outdir: Path,
    epoch: int = typer.Option(-1, help="checkpoint to export (-1: the last)"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Write one safetensors file per member plus a members table."""
    from .zoo.transfer import export_zoo

    out = export_zoo(path, outdir, epoch=epoch, overwrite=overwrite, progress=_progress(quiet))
    typer.echo(f"{out}: exported")


@zoo_app.command("convert")
def zoo_convert(
    src: Path,
    dst: Path,
    overwrite: bool = typer.Option(False, "--overwrite"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Convert between Zarr and HDF5 (bit-exact)."""
    from .zoo.transfer import convert_zoo

    out = convert_zoo(src, dst, overwrite=overwrite, progress=_progress(quiet))
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
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a zoo from a spec; re-running the same command resumes an interrupted build."""
    from .zoo.build import build_zoo
    from .zoo.store import resolve_store_path

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
    )
    if report.trained == 0:
        typer.echo(f"{report.path}: complete, nothing to do ({report.members} members)")
    else:
        typer.echo(
            f"{report.path}: trained {report.trained} members in {report.seconds:.1f} s "
            f"({report.members_per_s * 60:.0f} members/min); {report.already_done + report.trained}/"
            f"{report.members} done"
        )


@zoo_app.command("configs")
def zoo_configs() -> None:
    """List the zoo specs shipped with weightzoo."""
    from .zoo.spec import load_spec, shipped_configs

    for name in shipped_configs():
        spec = load_spec(name)
        typer.echo(f"{name:<22} {spec.members:>6} members  {spec.task:<12} {spec.description}")


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
        from . import __version__

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
