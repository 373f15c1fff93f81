"""Masks hold in any training loop: plain PyTorch loops with each optimizer leave pruned weights at 0."""

from __future__ import annotations

import copy
import gc
import io
import warnings

import pytest
import torch
from torch import nn

import shrinkviz as sv
from shrinkviz.loop import enforce
from shrinkviz.loop.masks import (
    MaskError,
    apply_masks,
    get_masks,
    masks_from_state_dict,
    remove_masks,
    revived,
    set_masks,
)

OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "adam_foreach_off": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 16),
        nn.ReLU(),
        nn.Linear(16, 4),
    )


def _plain_loop(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 6) -> None:
    generator = torch.Generator().manual_seed(1)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 8, 8, generator=generator)
        y = torch.randint(0, 4, (8,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def _zeros(model: nn.Module) -> dict[str, int]:
    return {name: int((~mask).sum()) for name, mask in get_masks(model).items()}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_plain_loop_keeps_every_pruned_weight_zero(name):
    pruned = sv.prune(_net(), strategy="layer_weight", compression=4).model
    before = {n: p.detach().clone() for n, p in pruned.named_parameters()}
    _plain_loop(pruned, OPTIMIZERS[name](pruned.parameters()))
    assert revived(pruned) == {}
    for pname, mask in get_masks(pruned).items():
        param = pruned.get_parameter(pname)
        assert int(param[~mask].count_nonzero()) == 0
        assert not torch.equal(param[mask], before[pname][mask])  # the kept weights did train


def test_a_step_sets_revived_weights_to_positive_zero_and_zeroes_their_gradients():
    layer = set_masks(nn.Linear(3, 2), {"weight": torch.tensor([[1, 0, 1], [0, 1, 0]])})
    opt = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
    with torch.no_grad():
        layer.weight[0, 1] = -2.0  # revived outside an optimizer step, negative
    layer(torch.randn(4, 3)).sum().backward()
    opt.step()
    masked = ~get_masks(layer)["weight"]
    assert torch.equal(layer.weight.grad[masked], torch.zeros(3))
    assert torch.equal(opt.state[layer.weight]["momentum_buffer"][masked], torch.zeros(3))
    assert not torch.signbit(layer.weight[masked]).any() and int(layer.weight[masked].count_nonzero()) == 0
    layer.half()  # the cached 0/1 mask follows the parameter's dtype
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 3).half()).sum().backward()
    opt.step()
    assert int(layer.weight[masked].count_nonzero()) == 0


def test_without_masks_the_same_loop_revives_weights():
    pruned = sv.prune(_net(), strategy="global_weight", compression=4).model
    masks = get_masks(pruned)
    remove_masks(pruned)
    _plain_loop(pruned, OPTIMIZERS["adam"](pruned.parameters()))
    assert sum(int(pruned.get_parameter(n)[~m].count_nonzero()) for n, m in masks.items()) > 0


def test_optimizer_state_stays_clean_for_masked_weights():
    pruned = sv.prune(_net(), strategy="layer_weight", compression=4).model
    opt = torch.optim.Adam(pruned.parameters(), lr=1e-2)
    _plain_loop(pruned, opt)
    for pname, mask in get_masks(pruned).items():
        state = opt.state[pruned.get_parameter(pname)]
        assert int(state["exp_avg"][~mask].count_nonzero()) == 0
        assert int(state["exp_avg_sq"][~mask].count_nonzero()) == 0


def test_masks_survive_deepcopy_pickle_and_state_dict_round_trip():
    pruned = sv.prune(_net(), strategy="global_weight", compression=4).model
    twin = copy.deepcopy(pruned)
    buffer = io.BytesIO()
    torch.save(pruned, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    fresh = _net()
    sd = pruned.state_dict()
    set_masks(fresh, masks_from_state_dict(sd))
    fresh.load_state_dict(sd)
    for model in (twin, loaded, fresh):
        _plain_loop(model, OPTIMIZERS["sgd_momentum_wd"](model.parameters()))
        assert revived(model) == {} and _zeros(model) == _zeros(pruned)


def test_forward_has_no_mask_hooks_and_remove_masks_unregisters():
    pruned = sv.prune(_net(), strategy="global_weight", compression=4).model
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in pruned.modules())
    weight = pruned[0].weight
    assert enforce.registered(weight)
    remove_masks(pruned)
    assert not enforce.registered(weight)
    assert all(enforce.GUARD_ATTR not in m.__dict__ for m in pruned.modules())


def test_hooks_do_not_keep_models_alive():
    pruned = sv.prune(_net(), strategy="global_weight", compression=4).model
    key = id(pruned[0].weight)
    assert key in enforce._ENTRIES
    del pruned
    gc.collect()
    assert key not in enforce._ENTRIES


def _revive(model: nn.Module) -> int:
    name, mask = next(iter(get_masks(model).items()))
    with torch.no_grad():
        model.get_parameter(name)[~mask] = 1.0
    return int((~mask).sum())


def test_verbs_refuse_revived_weights_with_the_count_and_the_fix():
    ds = sv.load_dataset("digits").subset(train=64, val=16, test=16)
    pruned = sv.prune(
        sv.create_model("tiny_cnn", dataset=ds, seed=0), strategy="layer_weight", compression=4
    ).model
    count = _revive(pruned)
    for verb in (
        lambda: sv.finetune(pruned, ds, "adam_fast", progress=False),
        lambda: sv.quantize(pruned, ds, "ptq"),
        lambda: sv.prune(pruned, strategy="global_weight", compression=8),
        lambda: sv.distill(pruned, ds, "adam_fast", progress=False),
        lambda: sv.pipeline(pruned, ds, "PQ", (1, 1), progress=False),
    ):
        with pytest.raises(
            MaskError, match=rf"{count} of \d+ pruned weights are nonzero.*apply_masks.*remove_masks"
        ):
            verb()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sv.measure(pruned, ds)
    assert any(f"measure: {count} of" in str(w.message) for w in caught)
    apply_masks(pruned)
    assert revived(pruned) == {}
