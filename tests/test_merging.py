"""Merging and alignment end to end: zoo members and state-dict files as sources, alignment before
merging, evaluation on the members' tasks, greedy soups, sweeps, the Ratatouille specs, and the
`weightzoo align` / `weightzoo merge` commands with their one-line errors."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import make_zoo
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from weightzoo.cli import main
from weightzoo.errors import MergeError
from weightzoo.metanet.align import apply_flat
from weightzoo.metanet.connectivity import member_connectivity
from weightzoo.metanet.functional import Functional
from weightzoo.metanet.merge import merge
from weightzoo.metanet.merging import greedy_soup, merge_models
from weightzoo.metanet.sources import from_files, from_zoo
from weightzoo.zoo import archs
from weightzoo.zoo.build import build_zoo
from weightzoo.zoo.opener import open_zoo
from weightzoo.zoo.selection import select_members


@pytest.fixture(scope="module")
def mlp_zoo(tmp_path_factory):
    path = tmp_path_factory.mktemp("align") / "mlp.zarr"
    build_zoo("tiny-mnist1d-mlp", path)
    return path


@pytest.fixture(scope="module")
def ft_zoo(tmp_path_factory):
    """tiny-mnist1d-finetune, built where tiny-mnist1d-ratatouille looks for it (its cwd)."""
    folder = tmp_path_factory.mktemp("finetune")
    build_zoo("tiny-mnist1d-finetune", folder / "tiny-mnist1d-finetune.zarr")
    return folder / "tiny-mnist1d-finetune.zarr"


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- align


def test_align_command_prints_barriers_and_writes_plot_and_json(mlp_zoo, tmp_path, capsys):
    png, out = tmp_path / "b.png", tmp_path / "curves.json"
    assert main(["align", str(mlp_zoo), "0", "1", "--plot", str(png), "--out", str(out), "--steps", "5"]) == 0
    text = capsys.readouterr().out
    assert "naive" in text and "weight" in text and "activation" in text and "test_loss" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads(out.read_text())
    assert set(report["curves"]) == {"naive", "weight", "activation"}
    with open_zoo(mlp_zoo) as zoo:
        ends = zoo.metric("test_loss", [0, 1])
    naive = report["curves"]["naive"]
    assert naive["lambdas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    # both ends are the stored members (evaluated on member 0's task: the same task here)
    np.testing.assert_allclose([naive["metrics"]["test_loss"][0], naive["metrics"]["test_loss"][-1]], ends, rtol=1e-5)
    for curve in report["curves"].values():
        assert all(v >= 0 for v in curve["barriers"].values())
        # an aligned B computes what B computed: the curve ends where the naive one does
        np.testing.assert_allclose(curve["metrics"]["test_acc"][-1], naive["metrics"]["test_acc"][-1], atol=1e-6)
    assert main(["align", str(mlp_zoo), "0", "1", "--method", "weight", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["curves"]) == {"naive", "weight"}


def test_weight_matching_lowers_the_barrier_of_a_permuted_copy(mlp_zoo):
    """B = a permuted copy of A: the naive line crosses a barrier, the matched one is A itself."""
    with open_zoo(mlp_zoo) as zoo:
        a = zoo.params([3])[0]
        action = zoo.perm_spec.random_action(torch.Generator().manual_seed(0), sign=False, scale=None)
        b = apply_flat(zoo.layout, zoo.perm_spec, a, action)
        from weightzoo.metanet.align import Aligner

        net = Functional(zoo.member_architecture(3))
        moved, _ = Aligner(zoo.layout, zoo.perm_spec, "weight", net).align(a, b)
        assert torch.equal(moved, a)


def test_align_errors_are_one_line(mlp_zoo, mixed_zoo, tmp_path, capsys):
    made = tmp_path / "made.zarr"
    make_zoo(made)
    with open_zoo(mixed_zoo) as zoo:
        archs_ = zoo.member_architectures(list(range(len(zoo))))
        j = next(i for i, a in enumerate(archs_) if a != archs_[0])
    for argv, needle in (
        ([str(mlp_zoo), "0", "99"], "out of range"),
        ([str(mlp_zoo), "0", "1", "--method", "bogus"], "alignment method 'bogus'"),
        ([str(mlp_zoo), "0", "1", "--steps", "1"], "at least 2 points"),
        ([str(mixed_zoo), "0", str(j)], "different architectures"),
        ([str(made), "0", "1"], "has no build spec"),
    ):
        assert main(["align", *argv]) == 2, argv
        assert needle in _err(capsys)


def test_member_connectivity_of_a_member_with_itself_is_flat(mlp_zoo):
    with open_zoo(mlp_zoo) as zoo:
        report = member_connectivity(zoo, 2, 2, lambdas=[0.0, 0.5, 1.0])
    for curve in report.curves.values():
        assert all(b == pytest.approx(0.0, abs=1e-6) for b in curve.barriers.values())


# ----------------------------------------------------------------------------- merge: zoo members


def test_merge_command_on_zoo_members_writes_what_the_method_gives(ft_zoo, tmp_path, capsys):
    out = tmp_path / "merged.safetensors"
    argv = ["merge", "--zoo", str(ft_zoo), "--members", "0,2", "--method", "ties", "--density", "0.2", "--eval"]
    assert main([*argv, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    with open_zoo(ft_zoo) as zoo:
        expected = merge("ties", zoo.params([0, 2]), base=zoo.base_params(), layout=zoo.layout, density=0.2)
        stored = zoo.layout.flatten(load_file(out))
        torch.testing.assert_close(stored, expected, rtol=0, atol=0)
        metrics = zoo.evaluate(expected, [0, 2])
    assert report["members"] == [0, 2] and report["method"] == "ties" and report["params"]["density"] == 0.2
    np.testing.assert_allclose(report["metrics"]["test_acc"], metrics["test_acc"], atol=1e-6)
    with safe_open(str(out), "pt") as f:
        info = json.loads(f.metadata()["weightzoo_merge"])
    assert info["sources"] == ["member 0", "member 2"] and info["params"]["lambda"] == 1.0


def test_merge_where_filter_and_soups(ft_zoo, tmp_path, capsys):
    with open_zoo(ft_zoo) as zoo:
        where = "`task.classes` == '0,1,2,3,4' and `task.label_perm` == 0"
        picked = select_members(zoo, where=where)
        assert picked and all(zoo.column("task.classes", [i])[0] == "0,1,2,3,4" for i in picked)
        models = from_zoo(zoo, picked)
        result = merge_models(models, "uniform_soup")
        torch.testing.assert_close(result.flat, zoo.params(picked).mean(0))
    out = tmp_path / "soup.safetensors"
    assert main(["merge", "--zoo", str(ft_zoo), "--where", where, "--method", "greedy_soup", "--out", str(out)]) == 0
    assert "greedy soup kept" in capsys.readouterr().out and out.exists()


def test_greedy_soup_never_worse_than_its_best_ingredient_on_held_out(ft_zoo):
    from weightzoo.metanet.heldout import holdout

    with open_zoo(ft_zoo) as zoo:
        flat = zoo.params(list(range(len(zoo))))
        x, y, kind = holdout(zoo, 0).validation
        net = Functional(zoo.member_architecture(0))

        def score(w):
            return net.scores(w, x, y, kind)["acc"].numpy()

        soup, kept = greedy_soup(flat, score)
        assert score(soup[None])[0] >= score(flat).max()
        assert kept[0] == int(np.argmax(score(flat)))
        torch.testing.assert_close(soup, flat[kept].mean(0))


def test_alignment_before_merging_recovers_one_network_from_permuted_copies(mlp_zoo):
    """Copies of one member, each differently permuted: their plain average is another network,
    aligned first it is the member itself (two copies: to the first; four: MergeMany)."""
    with open_zoo(mlp_zoo) as zoo:
        models = from_zoo(zoo, [5, 5, 5, 5])
        g = torch.Generator().manual_seed(3)
        for k in range(1, 4):
            action = zoo.perm_spec.random_action(g, sign=False, scale=None)
            models.flat[k] = apply_flat(zoo.layout, zoo.perm_spec, models.flat[k], action)
        member = zoo.params([5])[0]
        net = Functional(zoo.member_architecture(5))
        x = zoo.task_data(5).x_test
        plain = merge_models(models, "linear").flat
        assert not torch.allclose(net.outputs(plain, x), net.outputs(member, x), atol=1e-2)
        for method in ("weight", "activation"):
            # MergeMany agrees on one common permutation of the member: the same function
            merged = merge_models(models, "linear", align=method).flat
            torch.testing.assert_close(net.outputs(merged, x), net.outputs(member, x), atol=1e-5, rtol=1e-5)
        two = from_zoo(zoo, [5, 5])
        two.flat[1] = models.flat[1]
        torch.testing.assert_close(merge_models(two, "slerp", align="weight").flat, member)


# ----------------------------------------------------------------------------- merge: files


def _export(zoo_path, folder, members):
    assert main(["zoo", "export", str(zoo_path), str(folder), "-q"]) == 0
    return [str(folder / f"member_{i:06d}.safetensors") for i in members]


def test_merge_command_on_state_dict_files(mlp_zoo, tmp_path, capsys):
    files = _export(mlp_zoo, tmp_path / "x", [0, 1, 2])
    capsys.readouterr()
    out = tmp_path / "avg.safetensors"
    assert main(["merge", *files, "--method", "linear", "--weight", "1,1,2", "--out", str(out)]) == 0
    with open_zoo(mlp_zoo) as zoo:
        p = zoo.params([0, 1, 2])
        expected = (p[0] + p[1] + 2 * p[2]) / 4
        torch.testing.assert_close(zoo.layout.flatten(load_file(out)), expected)
        # files of the zoo's architecture are aligned with its permutation groups, evaluated on its tasks
    argv = ["merge", *files[:2], "--zoo", str(mlp_zoo), "--members", "0,1", "--method", "slerp", "--align", "weight"]
    assert main([*argv, "--eval", "--out", str(out)]) == 0
    assert "aligned by weight" in capsys.readouterr().out
    models = from_files(files[:2])  # no zoo: the architecture is inferred from the shapes
    assert models.architecture is not None and models.spec is not None and len(models.spec) == 2


def test_merge_errors_are_one_line_and_leave_no_output(mlp_zoo, ft_zoo, mixed_zoo, tmp_path, capsys):
    files = _export(mlp_zoo, tmp_path / "x", [0, 1, 2])
    other = tmp_path / "other.safetensors"
    module = archs.build_module(archs.mlp(40, [8], 10))
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(other))
    base = tmp_path / "notbase.safetensors"
    with open_zoo(ft_zoo) as zoo:
        sd = zoo.state_dict(3)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(base))
    capsys.readouterr()
    out = tmp_path / "m.safetensors"
    zoo_args = ["--zoo", str(ft_zoo), "--members", "0,2"]
    with open_zoo(mixed_zoo) as zoo:
        archs_ = zoo.member_architectures(list(range(len(zoo))))
        j = next(i for i, a in enumerate(archs_) if a != archs_[0])
    cases = (
        ([*files[:2], str(other), "--method", "linear"], "does not match"),
        ([str(other), str(other), "--zoo", str(ft_zoo), "--method", "linear"], "does not match"),
        ([*zoo_args, "--method", "ties", "--density", "1.5"], "density must be in (0, 1]"),
        ([*zoo_args, "--method", "bogus"], "merge method 'bogus'"),
        (["--zoo", str(ft_zoo), "--members", "0,1,2", "--method", "slerp"], "exactly two models"),
        ([*zoo_args, "--method", "ties", "--base", str(base)], "not the base of these members"),
        ([*files[:2], "--method", "task_arithmetic"], "base"),
        (["--zoo", str(mixed_zoo), "--members", f"0,{j}", "--method", "linear"], "different architectures"),
        (["--zoo", str(ft_zoo), "--where", "nope ==", "--method", "linear"], "--where"),
        (["--zoo", str(ft_zoo), "--where", "lr > 100", "--method", "linear"], "no member"),
        ([*zoo_args, "--method", "linear", "--sweep", "density"], "NAME=V1,V2"),
        ([*files[:2], "--method", "linear", "--eval"], "--eval needs tasks"),
    )
    for argv, needle in cases:
        assert main(["merge", *argv, "--out", str(out)]) == 2, argv
        assert needle in _err(capsys), argv
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".m")]
    with pytest.raises(MergeError, match="written as .safetensors"):
        from weightzoo.metanet.sources import write_safetensors

        with open_zoo(mlp_zoo) as zoo:
            write_safetensors(tmp_path / "m.pt", zoo.layout, zoo.params([0])[0], {})


# ----------------------------------------------------------------------------- sweeps and ratatouille


def test_merge_sweep_writes_a_zoo_of_settings_and_a_plot(ft_zoo, tmp_path, capsys):
    out = tmp_path / "sweep.zarr"
    argv = ["merge", "--zoo", str(ft_zoo), "--members", "0,2", "--method", "ties", "--sweep", "density=0.2,0.5,1.0"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "3 settings" in capsys.readouterr().out
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    with open_zoo(out) as sweep, open_zoo(ft_zoo) as zoo:
        assert len(sweep) == 3 and sweep.column("density").tolist() == [0.2, 0.5, 1.0]
        for row, density in enumerate([0.2, 0.5, 1.0]):
            merged = merge("ties", zoo.params([0, 2]), base=zoo.base_params(), layout=zoo.layout, density=density)
            torch.testing.assert_close(sweep.params([row])[0], merged)
            acc = zoo.evaluate(merged, [0, 2])["test_acc"].mean()
            assert sweep.metric("test_acc", [row])[0] == pytest.approx(acc, abs=1e-6)


def test_ratatouille_specs_build_and_average(ft_zoo, tmp_path, monkeypatch):
    monkeypatch.chdir(ft_zoo.parent)  # the stage-2 spec names its stage-1 zoo relative to the working folder
    path = tmp_path / "rat.zarr"
    build_zoo("tiny-mnist1d-ratatouille", path)
    with open_zoo(path) as rat, open_zoo(ft_zoo) as aux:
        table = rat.table()
        assert len(rat) == 16 and sorted(set(table["base.member"])) == [0, 1, 2, 3]
        # every member starts from its auxiliary fine-tune
        torch.testing.assert_close(rat.params(list(range(16)), epoch=0), aux.params(table["base.member"].tolist()))
        target = select_members(rat, where="`task.classes` == '0,1,2,3,4' and `task.label_perm` == 0")
        result = merge_models(from_zoo(rat, target), "uniform_soup", evaluate=True)
        torch.testing.assert_close(result.flat, rat.params(target).mean(0))
        assert result.metrics["test_acc"].shape == (len(target),)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_alignment_merging_and_augmentation_on_cuda():
    from weightzoo.metanet.align import Aligner
    from weightzoo.metanet.augment import parse

    arch = archs.mlp(10, [7, 6], 8)
    net = Functional(arch, device="cuda")
    g = torch.Generator().manual_seed(0)
    flat = (torch.randn(net.layout.size, generator=g) * 0.5).cuda()
    x = torch.randn(64, 10, generator=g).cuda()
    moved = apply_flat(net.layout, net.spec, flat, net.spec.random_action(g, sign=False, scale=None))
    for method in ("weight", "activation"):
        aligned, _ = Aligner(net.layout, net.spec, method, net, x).align(flat, moved)
        torch.testing.assert_close(aligned, flat)
    merged = merge("dare_ties", torch.stack([flat, moved]), base=torch.zeros_like(flat), layout=net.layout, density=0.5)
    assert merged.device.type == "cuda"
    aug = parse("perm,scale,noise:0.05,mixup-hard:0.5").bind_architecture(arch, "classification", 8)
    out, y = aug.flat(flat.expand(4, -1).clone(), torch.arange(4, device="cuda"), torch.Generator().manual_seed(1))
    assert out.device.type == "cuda" and y.device.type == "cuda"
    exact = parse("perm,scale").bind_architecture(arch).flat(flat.expand(4, -1).clone(), None, torch.Generator())[0]
    torch.testing.assert_close(net.outputs(exact, x), net.outputs(flat, x).expand(4, -1, -1), atol=1e-5, rtol=1e-4)
