"""Block (1x4, 4x1) and 2:4 pruning: exact patterns and the compression they reach."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shrinkviz.metrics.counts import count_parameters
from shrinkviz.models import create_model
from shrinkviz.techniques.prune import (
    available_strategies,
    get_masks,
    nm_compression,
    prunable_parameters,
    prune,
)
from shrinkviz.techniques.prune.strategies import target_nonzero


def _blocks(w: torch.Tensor, dim: int) -> torch.Tensor:
    """(blocks, 4) of ``w`` along ``dim`` (4 consecutive channels at one position), full blocks only."""
    moved = w.movedim(dim, -1)
    n = moved.shape[-1] // 4 * 4
    return moved[..., :n].reshape(-1, 4)


def test_registered():
    assert {"block_1x4", "block_4x1", "nm_2_4"} <= set(available_strategies())


@pytest.mark.parametrize("strategy,dim", [("block_1x4", 1), ("block_4x1", 0)])
@pytest.mark.parametrize("arch,shape", [("resnet8", (3, 16, 16)), ("mnistnet", (1, 28, 28))])
def test_blocks_are_whole_and_compression_within_one_block(strategy, dim, arch, shape):
    model = create_model(arch, input_shape=shape, seed=0)
    pruned = prune(model, strategy=strategy, compression=10).model
    total, nonzero = count_parameters(pruned)
    assert abs(nonzero - target_nonzero(total, 10)) <= 2  # nearest whole-block total: within half a block
    for name, module, attr in prunable_parameters(pruned):
        w = module._parameters[attr]
        nz = (_blocks(w, dim) != 0).sum(1)
        assert set(nz.tolist()) <= {0, 4}, name  # every full block all zero or all kept
        if w.shape[dim] % 4:  # the edge block (fewer channels) is all zero or all kept too
            edge = w.movedim(dim, -1)[..., w.shape[dim] // 4 * 4 :] != 0
            assert bool((edge.all(-1) | ~edge.any(-1)).all()), name


def test_block_compression_exact_when_budget_is_whole_blocks():
    net = nn.Sequential(nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 4, bias=False))
    # 96 parameters, 64 prunable (the classifier is excluded): compression 2 keeps 48 - 32 = 16 = 4 blocks
    pruned = prune(net, strategy="block_1x4", compression=2).model
    total, nonzero = count_parameters(pruned)
    assert (total, nonzero) == (96, 48) and int((pruned[0].weight != 0).sum()) == 16


def test_block_scores_rank_by_block_magnitude():
    lin = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1, 1, 1, 9, 0.1, 0.1, 0.1], [2, 2, 2, 2, 0.5, 0.5, 0.5, 0.5]]))
    net = nn.Sequential(lin, nn.Linear(2, 1))
    pruned = prune(
        net, strategy="block_1x4", compression=19 / 11
    ).model  # 19 parameters, 3 fixed: keep 8 = 2 of 4 blocks
    kept = (pruned[0].weight != 0).tolist()
    # block means: 1, 2.325, 2, 0.5 -> keep [9 .1 .1 .1] and [2 2 2 2]
    assert kept == [[False] * 4 + [True] * 4, [True] * 4 + [False] * 4]


@pytest.mark.parametrize("arch,shape", [("resnet8", (3, 16, 16)), ("lenet5", (1, 28, 28))])
def test_two_of_four_exact(arch, shape):
    model = create_model(arch, input_shape=shape, seed=0)
    target = nm_compression(model)
    pruned = prune(model, strategy="nm_2_4", compression=target).model
    total, nonzero = count_parameters(pruned)
    assert total / nonzero == pytest.approx(target, rel=1e-12)
    for name, module, attr in prunable_parameters(pruned):
        w = module._parameters[attr]
        groups = _blocks(w, 1)
        nz = (groups != 0).sum(1)
        assert bool((nz == 2).all()), name  # every full group of 4 input channels: exactly 2 nonzeros
        kept = groups.abs().where(groups != 0, torch.tensor(float("inf"))).min(1).values
        dropped = groups.abs().where(groups == 0, torch.tensor(-1.0)).max(1).values
        assert bool((kept >= dropped).all()), name  # the 2 largest |w| are the ones kept
        edge = w.shape[1] % 4
        if edge:
            assert int(((w.movedim(1, -1)[..., -edge:] != 0).sum(-1) > 2).sum()) == 0


def test_two_of_four_other_compression_names_the_reachable_one():
    model = create_model("resnet8", input_shape=(3, 16, 16), seed=0)
    reach = nm_compression(model)
    with pytest.raises(ValueError, match=rf"reaches compression x{reach:.6g}.*nm_compression\(model\)"):
        prune(model, strategy="nm_2_4", compression=8)
    close = prune(
        model, strategy="nm_2_4", compression=round(reach, 3)
    ).model  # within the tolerance: accepted
    assert count_parameters(close) == count_parameters(
        prune(model, strategy="nm_2_4", compression=reach).model
    )


def test_patterns_never_revive_and_keep_masks():
    model = prune(
        create_model("resnet8", input_shape=(3, 16, 16), seed=0), strategy="global_weight", compression=2
    ).model
    before = {n: m.clone() for n, m in get_masks(model).items()}
    again = prune(model, strategy="block_4x1", compression=6).model
    for name, mask in get_masks(again).items():
        assert not bool((mask & ~before[name]).any()), name
