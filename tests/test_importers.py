"""Importers of external zoo formats: fixtures written in each exact format, bit-exact round
trips, the Keras -> PyTorch equivalence of the Small CNN Zoo, skipping and one-line errors."""

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightzoo.errors import ImportFormatError, StoreError, WeightZooError
from weightzoo.zoo import archs
from weightzoo.zoo.importers import FORMATS, ImportReport, import_zoo, state_dict_folder
from weightzoo.zoo.importers import plan as import_plan
from weightzoo.zoo.opener import open_zoo

# ----------------------------------------------------------------------------- Small CNN Zoo

SCZ_EPOCHS = [0, 1, 3, 20, 86]
# (TF layer name, kernel shape) of the Small CNN Zoo network, in the order Keras flattens them.
SCZ_LAYERS = [
    ("sequential/conv2d", (3, 3, 1, 16)),
    ("sequential/conv2d_1", (3, 3, 16, 16)),
    ("sequential/conv2d_2", (3, 3, 16, 16)),
    ("sequential/dense", (16, 10)),
]


def _scz_layout_rows():
    """layout.csv rows as in the released files: per layer the bias first, then the kernel."""
    rows, pos = [], 0
    for layer, kshape in SCZ_LAYERS:
        for leaf, shape in (("bias:0", (kshape[-1],)), ("kernel:0", kshape)):
            size = int(np.prod(shape))
            rows.append(
                {
                    "varname": f"{layer}/{leaf}",
                    "start_idx": pos,
                    "end_idx": pos + size,
                    "size": size,
                    "shape": str(tuple(shape)),
                }
            )
            pos += size
    return rows, pos


def write_smallcnnzoo(root: Path, activations=("relu", "tanh", "relu"), crashed: int | None = None, seed=0):
    """A Small CNN Zoo folder; returns {(run, epoch): {varname: TF-ordered array}}."""
    root.mkdir(parents=True, exist_ok=True)
    layout_rows, total = _scz_layout_rows()
    pd.DataFrame(layout_rows).to_csv(root / "layout.csv", index=False)
    rng = np.random.default_rng(seed)
    weights, metrics, tensors = [], [], {}
    for run, act in enumerate(activations):
        for epoch in SCZ_EPOCHS:
            if run == crashed and epoch > 3:
                continue  # the job died after epoch 3
            row = (rng.standard_normal(total) * 0.4).astype(np.float32)
            tensors[run, epoch] = {
                r["varname"]: row[r["start_idx"] : r["end_idx"]].reshape(eval(r["shape"])) for r in layout_rows
            }
            weights.append(row)
            metrics.append(
                {
                    "config.activation": act,
                    "config.learning_rate": 0.01 * (run + 1),
                    "config.w_init": "he_normal",
                    "config.init_std": float("nan"),
                    "config.l2reg": 0.0,
                    "config.train_fraction": 0.5,
                    "config.dropout": 0.0,
                    "config.optimizer": "adam",
                    "config.dataset": "mnist",
                    "modeldir": f"/cns/zoo/mnist/{run}",
                    "step": epoch,
                    "test_accuracy": 0.1 + epoch / 100,
                    "test_loss": 2.0 - run / 10,
                    "train_accuracy": 0.2,
                    "train_loss": 1.5,
                }
            )
    np.save(root / "weights.npy", np.stack(weights))
    pd.DataFrame(metrics).to_csv(root / "metrics.csv.gz", index=False, compression="gzip")
    return tensors


def keras_forward(tf: dict, activation: str, x_nhwc: np.ndarray) -> np.ndarray:
    """What Keras computes: Conv2D(3x3, stride 2, 'valid') x3 on NHWC input, GAP, Dense."""
    act = {"relu": lambda v: np.maximum(v, 0), "tanh": np.tanh}[activation]
    h = x_nhwc.astype(np.float64)
    for layer, _ in SCZ_LAYERS[:3]:
        k, b = tf[f"{layer}/kernel:0"].astype(np.float64), tf[f"{layer}/bias:0"]
        oh, ow = (h.shape[1] - 3) // 2 + 1, (h.shape[2] - 3) // 2 + 1
        out = np.zeros((h.shape[0], oh, ow, k.shape[3]))
        for i in range(3):
            for j in range(3):
                out += h[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2, :] @ k[i, j]
        h = act(out + b)
    h = h.mean(axis=(1, 2))
    return h @ tf["sequential/dense/kernel:0"] + tf["sequential/dense/bias:0"]


def test_smallcnnzoo_matches_keras_and_skips_crashed_run(tmp_path):
    tensors = write_smallcnnzoo(tmp_path / "scz", activations=("relu", "tanh", "relu", "tanh"), crashed=2)
    report = import_zoo("smallcnnzoo", tmp_path / "scz", tmp_path / "z.zarr")
    assert isinstance(report, ImportReport) and report.imported == 3
    assert len(report.skipped) == 1 and "/cns/zoo/mnist/2" in report.skipped[0] and "[20, 86]" in report.skipped[0]
    zoo = open_zoo(tmp_path / "z.zarr")
    assert zoo.epochs == SCZ_EPOCHS and zoo.layout.size == 4970
    assert list(zoo.column("activation")) == ["relu", "tanh", "tanh"]
    assert list(zoo.column("modeldir")) == ["/cns/zoo/mnist/0", "/cns/zoo/mnist/1", "/cns/zoo/mnist/3"]
    np.testing.assert_allclose(zoo.column("learning_rate"), [0.01, 0.02, 0.04])
    assert {"test_accuracy", "test_loss", "train_accuracy", "train_loss"} <= set(zoo.metric_names)
    np.testing.assert_allclose(
        zoo.metric("test_accuracy", epoch=None)[0], [0.1 + e / 100 for e in SCZ_EPOCHS], rtol=1e-6
    )
    assert zoo.attrs["source"]["format"] == "smallcnnzoo"
    assert zoo.attrs["source"]["param_names"]["0.weight"] == "sequential/conv2d/kernel:0"

    x = np.random.default_rng(1).standard_normal((5, 28, 28, 1)).astype(np.float32)
    x_nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    for member, run in enumerate([0, 1, 3]):
        for epoch in (0, 86):
            act = "relu" if run % 2 == 0 else "tanh"
            with torch.no_grad():
                got = zoo.model(member, epoch)(x_nchw).numpy()
            np.testing.assert_allclose(got, keras_forward(tensors[run, epoch], act, x), atol=1e-5)


def test_smallcnnzoo_params_bit_exact_after_axis_reorder(tmp_path):
    tensors = write_smallcnnzoo(tmp_path / "scz", activations=("relu", "tanh"))
    import_zoo("smallcnnzoo", tmp_path / "scz", tmp_path / "z.h5")
    zoo = open_zoo(tmp_path / "z.h5")
    names = zoo.attrs["source"]["param_names"]
    for epoch in SCZ_EPOCHS:
        sd = zoo.state_dict(1, epoch)
        for ours, theirs in names.items():
            tf = tensors[1, epoch][theirs]
            expected = tf.transpose(3, 2, 0, 1) if tf.ndim == 4 else tf.T
            assert torch.equal(sd[ours], torch.from_numpy(np.ascontiguousarray(expected)))


def test_smallcnnzoo_without_modeldir_groups_runs_by_config(tmp_path):
    write_smallcnnzoo(tmp_path / "scz", activations=("relu", "tanh", "relu"))
    frame = pd.read_csv(tmp_path / "scz" / "metrics.csv.gz")
    frame.drop(columns="modeldir").to_csv(tmp_path / "scz" / "metrics.csv.gz", index=False, compression="gzip")
    report = import_zoo("smallcnnzoo", tmp_path / "scz", tmp_path / "z.zarr")
    assert report.imported == 3
    zoo = open_zoo(tmp_path / "z.zarr")
    assert zoo.attrs["source"]["run_key"] == "config" and "modeldir" not in zoo.hparam_names


def _truncate(path: Path, keep: int):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize(
    "damage, match",
    [
        ("truncate-weights", r"weights\.npy.*(truncated|unreadable)"),
        ("extra-metrics-row", r"weights\.npy: 15 rows but metrics\.csv\.gz has 16"),
        ("layout-no-shape", r"layout\.csv: missing column\(s\) \['shape'\]"),
        ("layout-bad-shape", r"layout\.csv: row 1 .*shape \(3, 3, 2, 16\) holds 288"),
        ("layout-short", r"weights\.npy: rows hold 4970 values but layout\.csv lists 4960"),
        ("no-metrics", r"metrics\.csv\.gz: missing"),
    ],
)
def test_smallcnnzoo_bad_input_is_one_line_error(tmp_path, damage, match):
    root = tmp_path / "scz"
    write_smallcnnzoo(root)
    layout = pd.read_csv(root / "layout.csv")
    if damage == "truncate-weights":
        _truncate(root / "weights.npy", 5000)
    elif damage == "extra-metrics-row":
        frame = pd.read_csv(root / "metrics.csv.gz")
        pd.concat([frame, frame.iloc[:1]]).to_csv(root / "metrics.csv.gz", index=False, compression="gzip")
    elif damage == "layout-no-shape":
        layout.drop(columns="shape").to_csv(root / "layout.csv", index=False)
    elif damage == "layout-bad-shape":
        layout.loc[1, "shape"] = "(3, 3, 2, 16)"
        layout.to_csv(root / "layout.csv", index=False)
    elif damage == "layout-short":
        layout = layout.iloc[:-2]  # drop the dense layer's bias (10) and kernel
        layout = pd.concat(
            [
                layout,
                pd.DataFrame(
                    [
                        {
                            "varname": "sequential/dense/kernel:0",
                            "start_idx": 4800,
                            "end_idx": 4960,
                            "size": 160,
                            "shape": "(16, 10)",
                        }
                    ]
                ),
            ]
        )
        layout.to_csv(root / "layout.csv", index=False)
    elif damage == "no-metrics":
        (root / "metrics.csv.gz").unlink()
    with pytest.raises(WeightZooError, match=match) as info:
        import_zoo("smallcnnzoo", root, tmp_path / "z.zarr")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "z.zarr").exists()


# ------------------------------------------------------------------------------ Model Zoos


# The Model Zoos CNNs as def_net.py writes them: conv blocks (out, kernel, max-pool?) and flat size.
DEF_NET_CNNS = {
    "CNN": ([(8, 5, True), (6, 5, True), (4, 2, False)], 36),
    "CNN2": ([(6, 5, True), (9, 5, True), (6, 2, False)], 54),
    "CNN3": ([(16, 3, True), (32, 3, True), (15, 3, True)], 60),
}


class ModelZooCNN(nn.Module):
    """A CNN of the Model Zoos (def_net.py: CNN, CNN2, CNN3), with its module_list parameter names."""

    def __init__(self, nlin: str, variant: str = "CNN", channels_in: int = 1):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[nlin]
        blocks, flat = DEF_NET_CNNS[variant]
        layers: list[nn.Module] = []
        for out, kernel, pool in blocks:
            layers += [nn.Conv2d(channels_in, out, kernel), *([nn.MaxPool2d(2, 2)] if pool else []), act()]
            channels_in = out
        self.module_list = nn.ModuleList([*layers, nn.Flatten(), nn.Linear(flat, 20), act(), nn.Linear(20, 10)])

    def forward(self, x):
        for layer in self.module_list:
            x = layer(x)
        return x


def write_modelzoo(root: Path, members=6, epochs=(0, 1, 2), crashed=None, odd=None, variant="CNN", channels_in=1):
    """Trial folders as Ray Tune writes them; returns {(member, epoch): state_dict}."""
    saved = {}
    for m in range(members):
        nlin = "tanh" if m % 2 else "relu"
        trial = root / f"NN_tune_trainable_{m:05d}_{m}_seed={m}_2022-01-0{m % 9}_12-00-00"
        trial.mkdir(parents=True)
        params = {
            "model::type": variant,
            "model::channels_in": channels_in,
            "model::nlin": nlin,
            "model::dropout": 0.0,
            "model::init_type": "uniform",
            "optim::optimizer": "adam",
            "optim::lr": 1e-3 * (m + 1),
            "seed": m,
            "training::batchsize": 10,
            "dataset::dump": "/data/mnist/dataset.pt",
            "optim": {"betas": [0.9, 0.99]},
        }
        (trial / "params.json").write_text(json.dumps(params))
        lines = []
        for e in epochs:
            if m == crashed and e == epochs[-1]:
                continue
            torch.manual_seed(100 * m + e)
            net = ModelZooCNN(nlin, variant, channels_in)
            sd = net.state_dict()
            if m == odd:
                sd["module_list.11.bias"] = torch.zeros(11)
            name = f"checkpoint_{e:06d}" if e % 2 == 0 else f"checkpoint_{e}"  # both spellings occur
            (trial / name).mkdir()
            torch.save(sd, trial / name / "checkpoints")
            saved[m, e] = sd
            lines.append(
                json.dumps(
                    {
                        "train_loss": 1.0 / (e + 1),
                        "train_acc": 0.5,
                        "test_loss": 2.0 - e / 10,
                        "test_acc": 0.1 * e + m / 100,
                        "training_iteration": e,
                        "time_this_iter_s": 3.2,
                        "trial_id": f"{m:05d}",
                        "config": params,
                    }
                )
            )
        (trial / "result.json").write_text("\n".join(lines) + "\n")
    (root / "basic-variant-state.json").write_text("{}")  # experiment files next to the trials
    return saved


def test_modelzoo_round_trip_function_and_skips(tmp_path):
    saved = write_modelzoo(tmp_path / "zoo", crashed=2, odd=4)
    report = import_zoo("modelzoo", tmp_path / "zoo", tmp_path / "mz.zarr")
    assert report.imported == 4
    assert len(report.skipped) == 2
    assert any("_00002_" in s and "missing checkpoints at epochs [2]" in s for s in report.skipped)
    assert any("_00004_" in s and "module_list.11.bias" in s for s in report.skipped)
    zoo = open_zoo(tmp_path / "mz.zarr")
    assert zoo.epochs == [0, 1, 2]
    assert list(zoo.column("activation")) == ["relu", "tanh", "tanh", "tanh"]
    np.testing.assert_allclose(zoo.column("optim.lr"), [1e-3, 2e-3, 4e-3, 6e-3])
    assert zoo.column("optim.betas")[0] == "[0.9, 0.99]"
    assert "time_this_iter_s" not in zoo.metric_names
    np.testing.assert_allclose(zoo.metric("test_acc", epoch=None)[1], [0.01, 0.11, 0.21], rtol=1e-6)
    assert zoo.architecture["family"] == "modelzoo_cnn" and zoo.architecture["args"]["variant"] == "CNN"
    x = torch.randn(3, 1, 28, 28)
    for i, m in enumerate([0, 1, 3, 5]):
        for e in (0, 1, 2):
            sd = zoo.state_dict(i, e)
            src = saved[m, e]
            assert all(torch.equal(a, b) for a, b in zip(sd.values(), src.values()))
            ref = ModelZooCNN("tanh" if m % 2 else "relu")
            ref.load_state_dict(src)
            with torch.no_grad():
                torch.testing.assert_close(zoo.model(i, e)(x), ref(x), rtol=0, atol=1e-6)
    assert zoo.attrs["source"]["param_names"]["0.weight"] == "module_list.0.weight"


@pytest.mark.parametrize("variant, channels, size", [("CNN2", 1, 28), ("CNN3", 3, 32)])
def test_modelzoo_cnns_are_the_archs_family(tmp_path, variant, channels, size):
    saved = write_modelzoo(tmp_path / "zoo", members=2, epochs=(1,), variant=variant, channels_in=channels)
    report = import_zoo("modelzoo", tmp_path / "zoo", tmp_path / "mz.zarr")
    assert report.imported == 2 and report.skipped == []
    zoo = open_zoo(tmp_path / "mz.zarr")
    assert zoo.architecture == archs.modelzoo_cnn(variant, channels, activation="relu")
    assert zoo.attrs["source"]["architecture_inferred"] is True
    x = torch.randn(3, channels, size, size)
    for m in range(2):  # member 1 is tanh: its activation is rebuilt from the family's arguments
        ref = ModelZooCNN("tanh" if m % 2 else "relu", variant, channels)
        ref.load_state_dict(saved[m, 1])
        with torch.no_grad():
            torch.testing.assert_close(zoo.model(m)(x), ref(x), rtol=0, atol=1e-6)


def test_modelzoo_mlp_is_inferred_and_mixed_hparams_become_columns(tmp_path):
    root = tmp_path / "zoo"
    nets = {}
    for m in range(3):
        trial = root / f"NN_tune_trainable_{m}_abc{m}"
        (trial / "checkpoint_1").mkdir(parents=True)
        params = {
            "model::type": "MLP",
            "model::i_dim": 5,
            "model::h_dim": [7],
            "model::o_dim": 2,
            "model::nlin": "leakyrelu",
            "model::use_bias": False,
            "seed": m,
            "tag": "a" if m else 3,
            **({"extra": 0.5} if m == 1 else {}),
        }
        (trial / "params.json").write_text(json.dumps(params))
        torch.manual_seed(m)
        nets[m] = nn.Sequential(nn.Linear(5, 7, bias=False), nn.LeakyReLU(), nn.Linear(7, 2, bias=False))
        torch.save(
            {f"module_list.{2 * i}.weight": t for i, t in enumerate(nets[m].state_dict().values())},
            trial / "checkpoint_1" / "checkpoints",
        )
    report = import_zoo("modelzoo", root, tmp_path / "mz.zarr")
    assert report.imported == 3 and report.skipped == []
    zoo = open_zoo(tmp_path / "mz.zarr")
    assert zoo.epochs == [1] and zoo.architecture["family"] == "mlp"
    assert list(zoo.column("activation")) == ["leaky_relu"] * 3
    assert list(zoo.column("tag")) == ["3", "a", "a"]  # mixed types -> strings
    np.testing.assert_equal(zoo.column("extra"), [np.nan, 0.5, np.nan])  # missing -> NaN
    assert list(zoo.column("seed")) == [0, 1, 2]
    x = torch.randn(4, 5)
    with torch.no_grad():
        for m in range(3):
            torch.testing.assert_close(zoo.model(m)(x), nets[m](x))


def test_modelzoo_without_model_folders_is_an_error(tmp_path):
    (tmp_path / "empty" / "logs").mkdir(parents=True)
    with pytest.raises(ImportFormatError, match=r"empty: no model folders .*NN_tune_trainable_"):
        import_zoo("modelzoo", tmp_path / "empty", tmp_path / "mz.zarr")


# ------------------------------------------------------------------------------ INR folders


def siren_state_dict(seed, widths=(2, 8, 8, 1)):
    """A DWSNets-style INR state_dict (``seq.<i>.weight`` / ``seq.<i>.bias``)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        sd[f"seq.{i}.weight"] = torch.randn(b, a, generator=g) / a
        sd[f"seq.{i}.bias"] = torch.randn(b, generator=g) / 10
    return sd


def siren_forward(sd, x, w0=30.0):
    n = len(sd) // 2
    for i in range(n):
        x = x @ sd[f"seq.{i}.weight"].T + sd[f"seq.{i}.bias"]
        if i < n - 1:
            x = torch.sin(w0 * x)
    return x


def write_inr_folder(root: Path, classes=("3", "10", "7"), per_class=2):
    saved = {}
    for c, label in enumerate(classes):
        (root / label).mkdir(parents=True)
        for k in range(per_class):
            sd = siren_state_dict(10 * c + k)
            torch.save(sd, root / label / f"inr_{k}.pth")
            saved[f"{label}/inr_{k}.pth"] = sd
    return saved


def test_inr_folder_labels_and_siren_function(tmp_path):
    saved = write_inr_folder(tmp_path / "inrs")
    report = import_zoo("inr-folder", tmp_path / "inrs", tmp_path / "inr.zarr")
    assert report.imported == 6 and report.skipped == []
    zoo = open_zoo(tmp_path / "inr.zarr")
    files = list(zoo.column("file"))
    assert files == sorted(saved)
    labels, ids = list(zoo.column("label")), list(zoo.column("label_id"))
    assert dict(zip(labels, ids)) == {"3": 0, "7": 1, "10": 2}  # numeric class order
    assert zoo.attrs["source"]["w0"] == 30.0
    x = torch.rand(16, 2) * 2 - 1
    for i, f in enumerate(files):
        assert torch.equal(zoo.params(i), torch.cat([t.reshape(-1) for t in saved[f].values()]))
        with torch.no_grad():
            torch.testing.assert_close(zoo.model(i)(x), siren_forward(saved[f], x), rtol=0, atol=1e-5)


def test_inr_folder_splits_json_from_another_machine(tmp_path):
    root = tmp_path / "inrs"
    saved = write_inr_folder(root, classes=("0", "1"))
    files = sorted(saved)
    splits = {
        "train": {"path": [f"/home/someone/data/inrs/{f}" for f in files[:3]], "label": ["0", "0", "1"]},
        "test": {"path": [f"/home/someone/data/inrs/{files[3]}", "/gone/x.pth"], "label": ["1", "1"]},
    }
    (root / "splits.json").write_text(json.dumps(splits))
    report = import_zoo("inr-folder", root, tmp_path / "inr.h5")
    assert report.imported == 4 and len(report.skipped) == 1 and "/gone/x.pth" in report.skipped[0]
    zoo = open_zoo(tmp_path / "inr.h5")
    assert list(zoo.column("split")) == ["train", "train", "train", "test"]
    assert list(zoo.column("label")) == ["0", "0", "1", "1"]


def test_inr_folder_rejects_non_siren(tmp_path):
    (tmp_path / "inrs" / "a").mkdir(parents=True)
    torch.save({"net.weight": torch.zeros(3, 1, 3, 3), "net.bias": torch.zeros(3)}, tmp_path / "inrs" / "a" / "0.pth")
    with pytest.raises(ImportFormatError, match=r"0\.pth: not a SIREN state_dict"):
        import_zoo("inr-folder", tmp_path / "inrs", tmp_path / "inr.zarr")


# ----------------------------------------------------------------------------- state-dicts


def mlp_state_dict(seed, widths=(4, 6, 3)):
    g = torch.Generator().manual_seed(seed)
    return {
        k: v
        for i, (a, b) in enumerate(itertools.pairwise(widths))
        for k, v in ((f"fc{i}.weight", torch.randn(b, a, generator=g)), (f"fc{i}.bias", torch.randn(b, generator=g)))
    }


def write_state_dicts(root: Path):
    """Readable members a, b/c, b/d, plus one of another layout and one corrupt file."""
    (root / "b").mkdir(parents=True)
    good = {"a.safetensors": mlp_state_dict(0), "b/c.pt": mlp_state_dict(1), "b/d.pth": mlp_state_dict(2)}
    save_file(good["a.safetensors"], root / "a.safetensors")
    torch.save({"state_dict": good["b/c.pt"], "epoch": 3}, root / "b" / "c.pt")  # a wrapped checkpoint
    torch.save(good["b/d.pth"], root / "b" / "d.pth")
    torch.save(mlp_state_dict(3, widths=(4, 7, 3)), root / "e.pt")
    (root / "f.pt").write_bytes(b"not a torch file")
    (root / "notes.txt").write_text("ignored")
    return good


def test_state_dicts_end_to_end(tmp_path, suffix):
    good = write_state_dicts(tmp_path / "sds")
    out = tmp_path / f"sd{suffix}"
    report = import_zoo("state-dicts", tmp_path / "sds", out, progress=True)
    assert report.imported == 3 and report.out == str(out)
    assert [s.split(":")[0] for s in report.skipped] == ["e.pt", "f.pt"]
    assert "fc0.weight" in report.skipped[0] and "unreadable" in report.skipped[1]
    zoo = open_zoo(out)
    assert list(zoo.column("file")) == list(good)
    assert zoo.architecture["family"] == "mlp" and zoo.perm_spec is not None
    assert zoo.attrs["source"]["param_names"] == {
        "0.weight": "fc0.weight",
        "0.bias": "fc0.bias",
        "2.weight": "fc1.weight",
        "2.bias": "fc1.bias",
    }
    x = torch.randn(5, 4)
    for i, sd in enumerate(good.values()):
        assert torch.equal(zoo.params(i), torch.cat([t.reshape(-1) for t in sd.values()]))
        with torch.no_grad():
            expected = torch.relu(x @ sd["fc0.weight"].T + sd["fc0.bias"]) @ sd["fc1.weight"].T + sd["fc1.bias"]
            torch.testing.assert_close(zoo.model(i)(x), expected)
    assert zoo.attrs["source"]["skipped"] == report.skipped


def test_state_dicts_cnn_gap_and_unknown_flatten(tmp_path, monkeypatch):
    monkeypatch.setattr(import_plan, "BATCH_MEMBERS", 2)  # several appends
    gap = tmp_path / "gap"
    gap.mkdir()
    for i in range(5):
        torch.manual_seed(i)
        net = nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.ReLU(),
            nn.Conv2d(4, 5, 3),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(5, 2),
        )
        torch.save(net.state_dict(), gap / f"m{i}.pt")
    import_zoo("state-dicts", gap, tmp_path / "gap.zarr")
    zoo = open_zoo(tmp_path / "gap.zarr")
    assert len(zoo) == 5 and zoo.architecture["family"] == "cnn"
    assert zoo.model(4)(torch.randn(2, 3, 9, 9)).shape == (2, 2)

    flat = tmp_path / "flat"
    flat.mkdir()
    sd = {"c.weight": torch.randn(4, 1, 3, 3), "c.bias": torch.randn(4), "l.weight": torch.randn(2, 4 * 5 * 5)}
    torch.save(sd, flat / "m.pt")
    import_zoo("state-dicts", flat, tmp_path / "flat.zarr")
    zoo = open_zoo(tmp_path / "flat.zarr")
    assert zoo.architecture is None and zoo.perm_spec is None
    assert [e.role for e in zoo.layout] == ["weight", "bias", "weight"]
    assert all(torch.equal(zoo.state_dict(0)[k], v) for k, v in sd.items())
    with pytest.raises(StoreError, match="no architecture"):
        zoo.model(0)


def test_state_dicts_empty_folder_is_an_error(tmp_path):
    (tmp_path / "none").mkdir()
    with pytest.raises(ImportFormatError, match=r"none: no \.safetensors/\.pt/\.pth files"):
        import_zoo("state-dicts", tmp_path / "none", tmp_path / "z.zarr")


# --------------------------------------------------------------------- API and atomicity


def test_unknown_format_names_the_valid_ones(tmp_path):
    with pytest.raises(
        ImportFormatError, match="unknown import format 'npz'.*smallcnnzoo, modelzoo, inr-folder, state-dicts"
    ):
        import_zoo("npz", tmp_path, tmp_path / "z.zarr")
    assert FORMATS == ("smallcnnzoo", "modelzoo", "inr-folder", "state-dicts")


def test_missing_source_folder(tmp_path):
    with pytest.raises(ImportFormatError, match="nowhere: no such directory"):
        import_zoo("modelzoo", tmp_path / "nowhere", tmp_path / "z.zarr")


def test_backend_keyword_names_the_suffix(tmp_path):
    write_state_dicts(tmp_path / "sds")
    report = import_zoo("state-dicts", tmp_path / "sds", tmp_path / "zoo", backend="hdf5")
    assert report.out == str(tmp_path / "zoo.h5") and len(open_zoo(tmp_path / "zoo.h5")) == 3
    with pytest.raises(StoreError, match="contradicts backend"):
        import_zoo("state-dicts", tmp_path / "sds", tmp_path / "z.zarr", backend="hdf5")


def _leftovers(folder: Path):
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def test_failed_import_leaves_existing_store(tmp_path, suffix, monkeypatch):
    write_state_dicts(tmp_path / "sds")
    out = tmp_path / f"zoo{suffix}"
    import_zoo("state-dicts", tmp_path / "sds", out)
    assert len(open_zoo(out)) == 3

    with pytest.raises(StoreError, match="already exists"):
        import_zoo("state-dicts", tmp_path / "sds", out)

    torch.save(mlp_state_dict(9), tmp_path / "sds" / "z.pt")  # a fourth member ...

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(import_plan, "_flush", disk_full)  # ... that never gets written
    with pytest.raises(OSError, match="No space left"):
        import_zoo("state-dicts", tmp_path / "sds", out, overwrite=True)
    assert len(open_zoo(out)) == 3 and _leftovers(tmp_path) == []

    monkeypatch.undo()
    with pytest.raises(ImportFormatError):
        import_zoo("modelzoo", tmp_path / "sds", out, overwrite=True)  # no trial folders
    assert len(open_zoo(out)) == 3


def test_failed_import_leaves_no_partial_store(tmp_path):
    root = tmp_path / "sds"
    root.mkdir()
    (root / "a.pt").write_bytes(b"garbage")
    (root / "b.pt").write_bytes(b"more garbage")
    with pytest.raises(ImportFormatError, match=r"no readable state_dict among 2 files; first problem: .*a\.pt"):
        import_zoo("state-dicts", root, tmp_path / "z.zarr")
    assert not (tmp_path / "z.zarr").exists() and _leftovers(tmp_path) == []


def test_all_members_skipped_inside_the_write_is_an_error(tmp_path, monkeypatch):
    write_state_dicts(tmp_path / "sds")

    def refuse(paths, ref):
        raise import_plan.Skip("refused")

    monkeypatch.setattr(state_dict_folder, "load_checkpoints", refuse)
    with pytest.raises(ImportFormatError, match="no member could be imported; first reason: a.safetensors: refused"):
        import_zoo("state-dicts", tmp_path / "sds", tmp_path / "z.zarr")
    assert not (tmp_path / "z.zarr").exists() and _leftovers(tmp_path) == []


def test_metrics_file_is_gzip(tmp_path):
    write_smallcnnzoo(tmp_path / "scz", activations=("relu",))
    with gzip.open(tmp_path / "scz" / "metrics.csv.gz", "rt") as f:
        assert f.readline().startswith("config.activation,")
