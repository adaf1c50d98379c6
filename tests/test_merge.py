"""Merge methods against hand-worked examples: every expected tensor below is written out from the
method's definition (the arithmetic is in the comments), never computed by the implementation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from weightzoo.errors import MergeError
from weightzoo.layout import ParamLayout
from weightzoo.metanet.merge import (
    METHODS,
    breadcrumbs_mask,
    check_params,
    dare_drop,
    disjoint_mean,
    elect_sign,
    keep_count,
    merge,
    method_table,
    model_stock_ratio,
    slerp,
    trim_magnitude,
)

T = torch.tensor
TWO_TENSORS = ParamLayout.from_shapes([("a", (2, 3), "weight", 0), ("b", (3,), "bias", 0)])
MATRIX = ParamLayout.from_shapes([("w", (2, 4), "weight", 0)])

# Three models of a 6-entry vector and a base of ones (linear / task arithmetic).
MODELS = T([[1.0, 2, 3, 4, 5, 6], [3, 2, 1, 0, -1, -2], [0, 0, 0, 0, 0, 6]])
ONES = torch.ones(6)

# TIES: task vectors (models - base) with no ties in magnitude among the top three of each.
TAUS = T([[4.0, -1, 0.5, 2, -3, 1], [-2, 3, -0.5, 1, -1, -4], [1, 2, 1.5, -5, 0.2, 0.1]])
# density 0.5 keeps k = 3 of 6 per model:
#   t0 -> [4, 0, 0, 2, -3, 0]     t1 -> [-2, 3, 0, 0, 0, -4]     t2 -> [0, 2, 1.5, -5, 0, 0]
# elected sign of the sums [2, 5, 1.5, -3, -3, -4]: + + + - - -
# disjoint mean: [4/1, (3+2)/2, 1.5/1, -5/1, -3/1, -4/1] = [4, 2.5, 1.5, -5, -3, -4]
TIES_MERGED = T([4.0, 2.5, 1.5, -5, -3, -4])


# ----------------------------------------------------------------------------- linear


def test_linear_weighted_average():
    # (1*m0 + 2*m1 + 1*m2) = [1+6+0, 2+4+0, 3+2+0, 4+0+0, 5-2+0, 6-4+6] = [7, 6, 5, 4, 3, 8]; / 4
    assert_close(merge("linear", MODELS, weight=[1, 2, 1]), T([1.75, 1.5, 1.25, 1.0, 0.75, 2.0]))
    assert_close(merge("linear", MODELS, weight=[1, 2, 1], normalize=False), T([7.0, 6, 5, 4, 3, 8]))
    # default weight 1.0 each: the mean [4, 4, 4, 4, 4, 10] / 3
    assert_close(merge("linear", MODELS), T([4.0, 4, 4, 4, 4, 10]) / 3)


# ----------------------------------------------------------------------------- task arithmetic


def test_task_arithmetic():
    # taus = models - 1: [0,1,2,3,4,5], [2,1,0,-1,-2,-3], [-1,-1,-1,-1,-1,5]; sum [1,1,1,1,1,7]
    # base + 0.5 * sum = [1.5, 1.5, 1.5, 1.5, 1.5, 4.5]
    assert_close(merge("task_arithmetic", MODELS, base=ONES, **{"lambda": 0.5}), T([1.5, 1.5, 1.5, 1.5, 1.5, 4.5]))
    assert_close(merge("task_arithmetic", MODELS, base=ONES, lambda_=0.5), T([1.5, 1.5, 1.5, 1.5, 1.5, 4.5]))
    # weights [1, 1, 2], normalize: (t0 + t1 + 2 t2) = [0, 0, 0, 0, 0, 12], / 4 = [0,0,0,0,0,3]; + 1
    got = merge("task_arithmetic", MODELS, base=ONES, weight=[1, 1, 2], normalize=True)
    assert_close(got, T([1.0, 1, 1, 1, 1, 4]))


# ----------------------------------------------------------------------------- ties


def test_ties_hand_worked():
    models = ONES + TAUS
    assert_close(merge("ties", models, base=ONES, density=0.5), ONES + TIES_MERGED)
    # lambda 0.5: 1 + 0.5 * [4, 2.5, 1.5, -5, -3, -4]
    assert_close(merge("ties", models, base=ONES, density=0.5, **{"lambda": 0.5}), T([3.0, 2.25, 1.75, -1.5, -0.5, -1]))
    # normalize=False sums the agreeing entries: [4, 3+2, 1.5, -5, -3, -4]
    assert_close(merge("ties", models, base=ONES, density=0.5, normalize=False), ONES + T([4.0, 5, 1.5, -5, -3, -4]))


def test_ties_weights_and_count_consensus():
    models = ONES + TAUS
    # weights [1, 3, 1]: weighted trimmed t1 = [-6, 9, 0, 0, 0, -12]
    # sums [4-6, 9+2, 1.5, 2-5, -3, -12] -> signs - + + - - -
    # entry 0: only t1 agrees: -6 / 3 = -2;  entry 1: (9 + 2) / (3 + 1) = 2.75;  entry 5: -12 / 3 = -4
    got = merge("ties", models, base=ONES, density=0.5, weight=[1, 3, 1])
    assert_close(got, ONES + T([-2.0, 2.75, 1.5, -5, -3, -4]))
    # 'count' elects from sign counts: entry 3 has signs (+, 0, -) -> 0 -> +, so only t0's 2 is kept there
    got = merge("ties", models, base=ONES, density=0.5, consensus_method="count")
    assert_close(got, ONES + T([4.0, 2.5, 1.5, 2, -3, -4]))


def test_trim_and_sign_building_blocks():
    trimmed = trim_magnitude(TAUS, 0.5)
    assert_close(trimmed, T([[4.0, 0, 0, 2, -3, 0], [-2, 3, 0, 0, 0, -4], [0, 2, 1.5, -5, 0, 0]]))
    # ties on the threshold: topk keeps exactly k = 2 of four equal magnitudes
    assert int((trim_magnitude(T([[1.0, -1, 1, -1]]), 0.5) != 0).sum()) == 2
    assert_close(elect_sign(trimmed), T([1.0, 1, 1, -1, -1, -1]))
    assert_close(elect_sign(T([[1.0], [-1.0]])), T([1.0]))  # a zero sum elects +
    assert_close(disjoint_mean(trimmed), TIES_MERGED)
    assert_close(disjoint_mean(T([[0.0], [0.0]])), T([0.0]))  # no model agrees: 0


def test_keep_count_rounding():
    assert keep_count(0.5, 6) == 3
    assert keep_count(0.25, 6) == 2  # 1.5 rounds half up
    assert keep_count(0.01, 6) == 1  # at least one entry
    assert keep_count(0.01, 6, at_least=0) == 0


def test_ties_is_per_tensor():
    # a = [[6, -5, 4], [3, 2, 1]], b = [0.1, -0.3, 0.2]; density 2/3 keeps 4 of a and 2 of b
    tau = T([6.0, -5, 4, 3, 2, 1, 0.1, -0.3, 0.2])
    base = torch.zeros(9)
    per_tensor = merge("ties", tau[None], base=base, layout=TWO_TENSORS, density=2 / 3)
    assert_close(per_tensor, T([6.0, -5, 4, 3, 0, 0, 0, -0.3, 0.2]))
    # one 9-entry tensor: k = 6 keeps all of a and none of b
    whole = merge("ties", tau[None], base=base, density=2 / 3)
    assert_close(whole, T([6.0, -5, 4, 3, 2, 1, 0, 0, 0]))
    # making a's entries 100x larger leaves b's result alone
    scaled = tau.clone()
    scaled[:6] *= 100
    again = merge("ties", scaled[None], base=base, layout=TWO_TENSORS, density=2 / 3)
    assert_close(again[6:], T([0.0, -0.3, 0.2]))


# ----------------------------------------------------------------------------- dare


def test_dare_seeded():
    taus = torch.randn(3, 1000, generator=torch.Generator().manual_seed(7))
    base = torch.zeros(1000)
    a = merge("dare_ties", taus, base=base, density=0.3, seed=5)
    b = merge("dare_ties", taus, base=base, density=0.3, seed=5)
    c = merge("dare_ties", taus, base=base, density=0.3, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the default seed 0 repeats too
    assert torch.equal(
        merge("dare_linear", taus, base=base, density=0.3), merge("dare_linear", taus, base=base, density=0.3)
    )


def test_dare_survivor_fraction_and_rescale():
    n = 200_000
    tau = torch.ones(1, n)
    base = torch.zeros(n)
    kept = merge("dare_linear", tau, base=base, density=0.3, rescale="none")
    # each entry survives with probability 0.3: the kept fraction is 0.3 +- 3 * sqrt(0.3 * 0.7 / n) ~ 0.003
    assert abs(float(kept.mean()) - 0.3) < 0.005
    assert set(kept.unique().tolist()) == {0.0, 1.0}
    # the paper's rescale: survivors are 1 / 0.3
    paper = merge("dare_linear", tau, base=base, density=0.3, rescale="density")
    assert_close(paper[paper != 0], torch.full((int((paper != 0).sum()),), 1 / 0.3))
    # mergekit's rescale keeps the L1 norm of the task vector: sum |tau| = n
    l1 = merge("dare_linear", tau, base=base, density=0.3)
    assert_close(l1.abs().sum(), torch.tensor(float(n)))


def test_dare_rescale_hand_worked():
    tau = T([[2.0, 4, 6, 8]])
    g = torch.Generator().manual_seed(0)
    paper = dare_drop(tau, 0.5, g, rescale="density")
    kept = paper != 0
    # survivors are tau / 0.5 = [4, 8, 12, 16] where kept
    assert_close(paper, torch.where(kept, T([[4.0, 8, 12, 16]]), 0.0))
    g = torch.Generator().manual_seed(0)
    l1 = dare_drop(tau, 0.5, g, rescale="l1")
    # same draws; survivors scaled by |tau|_1 / |kept|_1 = 20 / sum of the kept entries
    scale = 20.0 / float((tau * kept).sum())
    assert_close(l1, tau * kept * scale)


def test_dare_density_one_is_task_arithmetic_or_ties():
    taus = T([[1.0, -2], [-3, 1], [1, 1]])
    base = T([10.0, 10])
    # dare_linear, density 1: base + sum = [10 - 1, 10 + 0]
    assert_close(merge("dare_linear", base + taus, base=base), T([9.0, 10]))
    # dare_ties, density 1: sums [-1, 0] elect - and +; agreeing entries summed (normalize False): [-3, 1+1]
    assert_close(merge("dare_ties", base + taus, base=base), T([7.0, 12]))


# ----------------------------------------------------------------------------- breadcrumbs

BC1 = T([[8.0, -7, 6, 5], [4, 3, -2, 1]])
BC2 = T([[1.0, 2, -3, 4], [5, -6, 7, 8]])
BC = torch.stack([BC1.reshape(-1), BC2.reshape(-1)])


def test_breadcrumbs_tensor_vs_row():
    zero = torch.zeros(8)
    # per tensor (8 entries): gamma 0.25 drops the top 2, density 0.5 keeps the next 4
    #   t1 -> [[0, 0, 6, 5], [4, 3, 0, 0]]     t2 -> [[0, 0, -3, 4], [5, -6, 0, 0]]
    got = merge("breadcrumbs", BC, base=zero, layout=MATRIX, density=0.5, gamma=0.25)
    assert_close(got, T([0.0, 0, 3, 9, 9, -3, 0, 0]))
    # per row (4 entries): drop the top 1, keep the next 2
    #   t1 -> [[0, -7, 6, 0], [0, 3, -2, 0]]   t2 -> [[0, 2, -3, 0], [0, -6, 7, 0]]
    got = merge("breadcrumbs", BC, base=zero, layout=MATRIX, density=0.5, gamma=0.25, granularity="row")
    assert_close(got, T([0.0, -5, 3, 0, 0, -3, 5, 0]))
    # without a layout the vector is one tensor (and a 1-D tensor is one row)
    assert_close(merge("breadcrumbs", BC, base=zero, density=0.5, gamma=0.25), T([0.0, 0, 3, 9, 9, -3, 0, 0]))


def test_breadcrumbs_ties():
    # masked as above per tensor; sums [[0, 0, 3, 9], [9, -3, 0, 0]] elect + + + + / + - + +
    # agreeing entries summed: (0,2): 6, (0,3): 5+4, (1,0): 4+5, (1,1): -6
    got = merge("breadcrumbs_ties", BC, base=torch.zeros(8), layout=MATRIX, density=0.5, gamma=0.25)
    assert_close(got, T([0.0, 0, 6, 9, 9, -6, 0, 0]))


def test_breadcrumbs_mask_building_block():
    mask = breadcrumbs_mask(BC1[None], 0.5, 0.25, "row")
    assert_close(mask[0], T([[False, True, True, False], [False, True, True, False]]))
    # gamma 0 keeps the top density fraction (TIES's trim)
    assert_close(breadcrumbs_mask(BC1[None], 0.25, 0.0)[0], T([[True, True, False, False], [False] * 4]))


# ----------------------------------------------------------------------------- slerp


def test_slerp_endpoints_and_orthogonal():
    a, b = T([1.0, 2, 0]), T([0.0, 1, 3])
    assert_close(merge("slerp", torch.stack([a, b]), t=0.0), a)
    assert_close(merge("slerp", torch.stack([a, b]), t=1.0), b)
    # a = [3, 0], b = [0, 4]: theta = pi/2, sin theta = 1
    ab = T([[3.0, 0], [0, 4]])
    # t = 0.5: sin(pi/4) * a + sin(pi/4) * b = [3 * 0.7071068, 4 * 0.7071068]
    assert_close(merge("slerp", ab), T([2.1213203, 2.8284271]))
    # t = 1/3: sin(pi/3) * a + sin(pi/6) * b = [3 * 0.8660254, 4 * 0.5]
    assert_close(merge("slerp", ab, t=1 / 3), T([2.5980762, 2.0]))


def test_slerp_colinear_falls_back_to_lerp():
    a = T([1.0, 2, 3])
    # b = 2a: cos 1 > 0.9995 -> 0.75 a + 0.25 b = [1.25, 2.5, 3.75]
    assert_close(slerp(0.25, a, 2 * a), T([1.25, 2.5, 3.75]))
    # b = -2a: |cos| = 1 -> 0.75 a - 0.5 a = [0.25, 0.5, 0.75]
    assert_close(slerp(0.25, a, -2 * a), T([0.25, 0.5, 0.75]))


def test_slerp_per_tensor():
    # tensor a: [3, 0, ...] vs [0, 4, ...] orthogonal; tensor b: [1, 2, 3] vs [2, 4, 6] colinear
    models = T([[3.0, 0, 0, 0, 0, 0, 1, 2, 3], [0, 4, 0, 0, 0, 0, 2, 4, 6]])
    got = merge("slerp", models, layout=TWO_TENSORS)
    assert_close(got, T([2.1213203, 2.8284271, 0, 0, 0, 0, 1.5, 3, 4.5]))


# ----------------------------------------------------------------------------- model stock


def test_model_stock_two_models():
    # taus [1, 0] and [1, 1]: cos = 1/sqrt(2); t = 2 cos / (1 + cos) = 2 (sqrt(2) - 1) = 0.8284271
    # mean of models [2, 1.5]; t * [2, 1.5] + (1 - t) * [1, 1] = [1 + t, 1 + 0.5 t]
    got = merge("model_stock", T([[2.0, 1], [2, 2]]), base=T([1.0, 1]))
    assert_close(got, T([1.8284271, 1.4142136]))
    assert_close(model_stock_ratio(T([[1.0, 0], [1, 1]])), torch.tensor(0.8284271))


def test_model_stock_three_models():
    # cosines: (t0, t1) 0, (t0, t2) 1/sqrt 2, (t1, t2) 1/sqrt 2 -> mean sqrt(2)/3 = 0.4714045
    # t = 3 * 0.4714045 / (1 + 2 * 0.4714045) = 0.7279221; result t * [2/3, 2/3, 0]
    got = merge("model_stock", T([[1.0, 0, 0], [0, 1, 0], [1, 1, 0]]), base=torch.zeros(3))
    assert_close(got, T([0.4852814, 0.4852814, 0.0]))


def test_model_stock_filter_wise():
    models = T([[1.0, 0, 1, 1], [0, 1, 2, 2]])  # w = [[1, 0], [1, 1]] and [[0, 1], [2, 2]]
    zero = torch.zeros(4)
    # per row: row 0 cos 0 -> t 0 -> base [0, 0]; row 1 cos 1 -> t = 2 / 2 = 1 -> mean [1.5, 1.5]
    got = merge(
        "model_stock", models, base=zero, layout=ParamLayout.from_shapes([("w", (2, 2), "weight", 0)]), filter_wise=True
    )
    assert_close(got, T([0.0, 0, 1.5, 1.5]))
    # whole tensor: cos = 4 / (sqrt 3 * 3) = 0.7698004, t = 2c / (1 + c) = 0.8699290; t * [0.5, 0.5, 1.5, 1.5]
    assert_close(merge("model_stock", models, base=zero), T([0.4349645, 0.4349645, 1.3048936, 1.3048936]))


# ----------------------------------------------------------------------------- parameters and errors


def test_check_params_fills_defaults():
    assert check_params("ties", {}, 3, True) == {
        "weight": 1.0,
        "density": 1.0,
        "lambda": 1.0,
        "normalize": True,
        "rescale": "none",
        "consensus_method": "sum",
    }
    filled = check_params("dare_linear", {"lambda_": 0.5, "rescale": True, "weight": [1, 2]}, 2, True)
    assert filled == {
        "weight": [1.0, 2.0],
        "density": 1.0,
        "lambda": 0.5,
        "normalize": False,
        "rescale": "l1",
        "seed": 0,
    }
    assert check_params("dare_linear", filled, 2, True) == filled  # a filled dict checks again unchanged
    assert check_params("slerp", {}, 2, False) == {"t": 0.5}


def test_method_table():
    rows = method_table()
    assert [r["method"] for r in rows] == list(METHODS)
    assert len(rows) == 11
    assert all(set(r) == {"method", "parameters", "convention", "source"} and all(r.values()) for r in rows)
    ties = next(r for r in rows if r["method"] == "ties")
    assert (
        ties["parameters"] == "weight=1.0, density=1.0, lambda=1.0, normalize=True, rescale=none, consensus_method=sum"
    )


THREE = torch.zeros(3, 6)
BASE = torch.zeros(6)

ERRORS = [
    (lambda: merge("tie", THREE, base=BASE), ["'tie'", "ties", "slerp"]),
    (lambda: merge("ties", THREE, base=BASE, gama=0.1), ["'gama'", "density"]),
    (lambda: merge("ties", THREE, base=BASE, density=1.5), ["ties", "density must be in (0, 1], got 1.5"]),
    (lambda: merge("dare_ties", THREE, base=BASE, density=0), ["density must be in (0, 1]"]),
    (lambda: merge("breadcrumbs", THREE, base=BASE, gamma=1.0), ["gamma must be in [0, 1)"]),
    (lambda: merge("breadcrumbs", THREE, base=BASE, gamma=0.5, density=0.6), ["gamma", "density"]),
    (lambda: merge("slerp", THREE[:2], t=1.5), ["t must be in [0, 1]"]),
    (lambda: merge("linear", torch.zeros(6)), ["models", "2-D"]),
    (lambda: merge("ties", THREE, base=torch.zeros(5)), ["base", "P=6"]),
    (lambda: merge("linear", THREE, layout=TWO_TENSORS), ["layout", "9"]),
    (lambda: merge("model_stock", THREE[:1], base=BASE), ["model_stock", "at least 2 models, got 1"]),
    (lambda: merge("slerp", THREE), ["slerp merges exactly two models, got 3; use linear or ties for more"]),
    (lambda: merge("ties", THREE), ["ties", "base"]),
    (lambda: merge("linear", THREE, weight=[1, 2]), ["weight", "2 values for 3 models"]),
    (lambda: merge("linear", THREE, weight=[1, -2, 1]), ["weight", "sum to 0", "normalize"]),
    (lambda: merge("ties", THREE, base=BASE, weight=[1, "x", 1]), ["weight"]),
    (lambda: merge("ties", THREE, base=BASE, lambda_=1, **{"lambda": 2}), ["lambda", "lambda_"]),
    (lambda: merge("task_arithmetic", THREE, base=BASE, **{"lambda": "big"}), ["lambda"]),
    (lambda: merge("dare_linear", THREE, base=BASE, rescale="l2"), ["rescale", "l1", "density"]),
    (lambda: merge("dare_linear", THREE, base=BASE, seed=0.5), ["seed"]),
    (lambda: merge("ties", THREE, base=BASE, consensus_method="max"), ["consensus_method", "sum", "count"]),
    (lambda: merge("breadcrumbs", THREE, base=BASE, granularity="col"), ["granularity", "tensor", "row"]),
    (lambda: merge("linear", THREE, normalize="yes"), ["normalize"]),
]


@pytest.mark.parametrize(("call", "expected"), ERRORS, ids=[f"error{i}" for i in range(len(ERRORS))])
def test_errors(call, expected):
    with pytest.raises(MergeError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for part in expected:
        assert part in message


# ----------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    models = (ONES + TAUS).cuda()
    got = merge("ties", models, base=ONES.cuda(), density=0.5, layout=None)
    assert got.device.type == "cuda"
    assert_close(got.cpu(), ONES + TIES_MERGED)
    dare = merge("dare_ties", models, base=ONES.cuda(), density=0.5, seed=3)
    assert dare.device.type == "cuda"
    assert torch.equal(dare, merge("dare_ties", models, base=ONES.cuda(), density=0.5, seed=3))
    stock = merge("model_stock", T([[2.0, 1], [2, 2]]).cuda(), base=T([1.0, 1]).cuda())
    assert_close(stock.cpu(), T([1.8284271, 1.4142136]))
    assert_close(merge("slerp", T([[3.0, 0], [0, 4]]).cuda()).cpu(), T([2.1213203, 2.8284271]))
    assert math.isfinite(float(merge("breadcrumbs", models, base=ONES.cuda(), density=0.5).sum()))


# ----------------------------------------------------------------------------- DELLA


def test_della_keep_probabilities_follow_magnitude_rank_by_hand():
    from weightzoo.metanet.merge import della_probabilities

    # magnitudes 1, 3, 2, 0.5 rank 1, 3, 2, 0 of 3: p = 0.3 + 0.4 * rank / 3
    taus = torch.tensor([[1.0, -3.0, 2.0, 0.5]])
    assert_close(della_probabilities(taus, 0.5, 0.2), torch.tensor([[0.3 + 0.4 / 3, 0.7, 0.3 + 0.8 / 3, 0.3]]))
    # a weight matrix ranks within each row (output neuron)
    rows = torch.tensor([[[1.0, 2.0], [5.0, -4.0]]])
    assert_close(della_probabilities(rows, 0.5, 0.1), torch.tensor([[[0.4, 0.6], [0.6, 0.4]]]))


def test_della_survivors_are_rescaled_by_their_own_keep_probability():
    from weightzoo.metanet.merge import della_probabilities

    g = torch.Generator().manual_seed(0)
    tau = torch.randn(1, 200, generator=g)
    base = torch.zeros(200)
    merged = merge("della_linear", tau, base=base, density=0.5, epsilon=0.3, rescale="density", seed=4)
    p = della_probabilities(tau, 0.5, 0.3)[0]
    kept = merged != 0
    assert 0.3 < kept.float().mean() < 0.7
    assert_close(merged[kept], tau[0][kept] / p[kept])
    # larger magnitudes survive more often
    big = tau[0].abs() > tau[0].abs().median()
    assert kept[big].float().mean() > kept[~big].float().mean()


def test_della_with_epsilon_zero_is_dare_with_the_same_seed():
    g = torch.Generator().manual_seed(1)
    models, base = torch.randn(3, 50, generator=g), torch.randn(50, generator=g)
    for della, dare in (("della_linear", "dare_linear"), ("della", "dare_ties")):
        a = merge(della, models, base=base, density=0.4, epsilon=0.0, seed=7)
        b = merge(dare, models, base=base, density=0.4, seed=7)
        assert_close(a, b)


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"density": 0.5, "epsilon": 0.5}, "density - epsilon must be > 0"),
        ({"density": 0.9, "epsilon": 0.2}, "at most 1"),
        ({"epsilon": -0.1}, "epsilon must be in [0, 1)"),
    ],
)
def test_della_epsilon_out_of_range_is_one_line(params, needle):
    with pytest.raises(MergeError) as info:
        merge("della", torch.ones(2, 4), base=torch.zeros(4), **params)
    assert needle in str(info.value) and "\n" not in str(info.value) and "epsilon" in str(info.value)
