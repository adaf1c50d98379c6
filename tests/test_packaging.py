"""Packaging: the metadata pip reads, the torch floor against the private ops the trainer calls,
and what importing the package costs (which heavy libraries it pulls in)."""

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import weightzoo
from weightzoo.zoo.train import optim

PYPROJECT = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_and_the_version_has_one_source():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "weightzoo._version.__version__"}


def test_the_torch_floor_is_the_release_of_the_private_ops_the_trainer_calls():
    floors = [d for d in PYPROJECT["project"]["dependencies"] if d.split(">=")[0].strip() == "torch"]
    assert floors == [f"torch>={optim.TORCH_FLOOR}"]
    assert all(hasattr(torch, op) for op in optim.PRIVATE_TORCH_OPS)
    p, g = torch.zeros(3), torch.ones(3)
    m1, m2, update, step = torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.ones(())
    torch._fused_adam_([update], [g], [m1], [m2], [], [step], lr=1.0, beta1=0.9, beta2=0.999, weight_decay=0.0,
                       eps=1e-8, amsgrad=False, maximize=False)  # fmt: skip
    assert torch.allclose(update, -torch.ones(3), atol=1e-6) and torch.equal(p, torch.zeros(3))  # Adam's first step


def imported_by(statement: str) -> set[str]:
    """Top-level packages a fresh interpreter has loaded after ``statement``."""
    code = f"{statement}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


HEAVY = {"torch_geometric", "huggingface_hub", "zarr", "h5py", "pandas", "scipy", "sklearn"}


@pytest.mark.parametrize("statement", ["import weightzoo", "import weightzoo.metanet", "import weightzoo.datasets"])
def test_importing_the_package_loads_no_heavy_library(statement):
    assert not imported_by(statement) & HEAVY


def test_zoo_info_reads_a_zoo_without_torch(tmp_path):
    from conftest import make_zoo

    path = str(tmp_path / "z.zarr")
    make_zoo(path)
    loaded = imported_by(f"from weightzoo.cli import main\nassert main(['zoo', 'info', {path!r}]) == 0")
    assert "zarr" in loaded and not loaded & {"torch", "torch_geometric", "huggingface_hub", "h5py", "pandas"}


def test_public_names_resolve_on_first_use():
    assert set(weightzoo.__all__) <= set(dir(weightzoo))
    assert weightzoo.open_zoo.__module__ == "weightzoo.zoo.opener"
    assert weightzoo.MetanetRun.__module__ == "weightzoo.metanet.run"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        weightzoo.nope  # noqa: B018
