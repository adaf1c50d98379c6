"""Shared fixtures: small zoos written through the public API, and a local Hugging Face Hub."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hub_server import FakeHub
from huggingface_hub import constants, hf_api
from huggingface_hub.utils import _cache_assets, _cache_manager, _http
from torch import nn

from weightzoo.zoo import archs
from weightzoo.zoo.store import ZooStore

# One network of every layer type the PermutationSpec covers: name -> (architecture, one input sample's
# shape). MLPs have 10 inputs and 8 outputs (and the SIREN 8 outputs): with fewer, weight matching's
# coordinate descent stalls on about 1 in 4 planted permutations (see test_align).
LAYER_TYPE_NETS = {
    "mlp": (archs.mlp(10, [7, 6], 8), (10,)),
    "mlp-nobias": (archs.mlp(10, [7, 6], 8, bias=False), (10,)),
    "mlp-layernorm": (archs.mlp(10, [7, 6], 8, norm="layernorm"), (10,)),
    "mlp-batchnorm": (archs.mlp(10, [7, 6], 8, norm="batchnorm"), (10,)),
    "cnn1d-gap": (archs.cnn(2, [4, 5], 3, dim=1), (2, 12)),
    "cnn2d-gap-bn": (archs.cnn(1, [4, 5], 3, batchnorm=True), (1, 9, 9)),
    "cnn2d-flatten": (archs.cnn(1, [3, 4], 2, head="flatten", flat_features=4 * 5 * 5), (1, 9, 9)),
    "residual-mlp": (archs.residual_mlp(5, 6, 2, 3), (5,)),
    "residual-mlp-layernorm": (archs.residual_mlp(5, 6, 2, 3, norm="layernorm"), (5,)),
    "smallcnnzoo": (archs.small_cnn_zoo(), (1, 28, 28)),
    "siren": (archs.siren(2, [16, 16], 8), (2,)),
}


def make_zoo(path, members=40, epochs=(0, 3), arch=None, chunk_members=8, seed=0):
    """A zoo of random members with a numeric, a string and a group hyperparameter and a metric."""
    arch = arch or archs.mlp(4, [6, 5], 3)
    _, layout, _ = archs.describe(arch)
    rng = np.random.default_rng(seed)
    params = rng.standard_normal((members, len(epochs), layout.size), dtype=np.float32)
    zoo = ZooStore.create(path, layout, architecture=arch, epochs=epochs, chunk_members=chunk_members)
    zoo.append(
        params,
        hparams={
            "lr": rng.uniform(0.001, 0.1, members),
            "label": np.array(["cat", "dog", "emu"])[np.arange(members) % 3],
            "image": np.arange(members) // 4,
        },
        metrics={"test_acc": rng.uniform(0, 1, (members, len(epochs)))},
    )
    zoo.close()
    return params


@pytest.fixture(params=[".zarr", ".h5"], ids=["zarr", "hdf5"])
def suffix(request):
    return request.param


def randomize_module(module: nn.Module, scale: float = 0.5) -> None:
    """Random parameters (and BatchNorm statistics) so that every symmetry is exercised."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in module.state_dict().values():
            if torch.is_floating_point(t):
                t.copy_(torch.randn(t.shape, generator=g) * scale)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0, generator=g)


@pytest.fixture(scope="session")
def mixed_zoo(tmp_path_factory):
    """The shipped tiny-mnist1d-mixed zoo (24 members of 16 architectures), built once per session."""
    from weightzoo.zoo.build import build_zoo

    path = tmp_path_factory.mktemp("mixed") / "mixed.zarr"
    build_zoo("tiny-mnist1d-mixed", path)
    return path


def tamper(path: Path) -> None:
    """Change a saved file's last bytes in place (its checksum no longer matches)."""
    data = bytearray(path.read_bytes())
    data[-4:] = b"\x00\x01\x02\x03"
    path.write_bytes(bytes(data))


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A FakeHub in tmp_path, with the real huggingface_hub client pointed at it and its token set.

    The env vars (HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET=1, HF_HUB_DISABLE_TELEMETRY=1, HF_HOME and HF_HUB_CACHE
    inside tmp_path; HF_HUB_OFFLINE, HF_OIDC_RESOURCE, ... removed) reach subprocesses. In this process
    huggingface_hub read most of them when it was imported, so the fixture also patches the copies it made:

    - ``constants.ENDPOINT`` (default endpoint of every ``HfApi()``) and ``constants.HUGGINGFACE_CO_URL_TEMPLATE``
      (the resolve URL of ``hf_hub_url``/``hf_hub_download``, built from ENDPOINT at import);
    - ``hf_api.api.endpoint``: the module-level ``HfApi`` behind ``huggingface_hub.upload_folder``, ``create_repo``...;
    - ``constants.HF_URL_HOSTS`` and ``utils._http._HUB_ORIGINS``: hosts whose URLs are parsed as Hub URLs and whose
      redirects are followed with the token (frozen from ENDPOINT at import);
    - ``constants.HF_HUB_DISABLE_XET = True``: with hf_xet installed, ``upload_folder`` would otherwise take the Xet
      pipeline and downloads would use Xet; ``HF_HUB_OFFLINE = False`` (offline mode blocks every request);
      ``HF_HUB_DISABLE_IMPLICIT_TOKEN = False`` (HF_TOKEN must be sent); ``HF_HUB_DISABLE_TELEMETRY = True`` (no
      telemetry, no agent-registry request from the user agent);
    - ``constants.HF_HOME``, ``HF_HUB_CACHE`` (and legacy ``HUGGINGFACE_HUB_CACHE``), ``HF_ASSETS_CACHE`` (and
      ``HUGGINGFACE_ASSETS_CACHE``), ``HF_XET_CACHE``, ``HF_TOKEN_PATH``, ``HF_STORED_TOKENS_PATH``,
      ``AGENT_HARNESSES_PATH`` and the from-imports ``utils._cache_manager.HF_HUB_CACHE``,
      ``utils._cache_assets.HF_ASSETS_CACHE``: the developer's cache and stored token are never read nor written.

    HF_TOKEN itself is read from the environment at each call, so the env var is enough for it. The shared HTTP client
    is closed before and after, so no pooled connection outlives the server.
    """
    hub = FakeHub(tmp_path / "fake_hub").start()
    home, cache = tmp_path / "hf_home", tmp_path / "hf_home" / "hub"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1"}
    env |= {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(cache)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HUGGINGFACE_CO_STAGING", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH", "HF_ASSETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    constants_patch = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
    }
    for name, value in constants_patch.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_http._url_origin(hub.endpoint)})
    monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(_cache_assets, "HF_ASSETS_CACHE", str(home / "assets"))
    _http.close_session()
    yield hub
    _http.close_session()
    hub.stop()
