"""shrinkviz.loop.optim: torch's optimizers without the torch._dynamo import, bit for bit the same."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from shrinkviz.loop import optim

CASES = [
    (optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    (optim.SGD, torch.optim.SGD, {"lr": 0.05}),
    (optim.Adam, torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-3}),
    (optim.AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 1e-2}),
]


def _train(cls: type[torch.optim.Optimizer], steps: int = 12, **kwargs) -> tuple[list[torch.Tensor], dict]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 5))
    opt = cls(model.parameters(), **kwargs)
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)
        for group in opt.param_groups:  # as fit's schedule does
            group["lr"] = kwargs["lr"] * 0.9**i
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()], opt.state_dict()


@pytest.mark.parametrize(("lean", "reference", "kwargs"), CASES)
def test_same_parameters_and_state_as_torch_optim(lean, reference, kwargs):
    ours, our_state = _train(lean, **kwargs)
    theirs, their_state = _train(reference, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert our_state["param_groups"] == their_state["param_groups"]
    for key, state in their_state["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(our_state["state"][key][name]), torch.as_tensor(value)), name
    again, _ = _train(lean, **kwargs)  # torch's class has now been constructed (its step hooked) too
    assert all(torch.equal(a, b) for a, b in zip(ours, again, strict=True))


def test_is_torchs_class_and_runs_the_global_hooks_once_per_step():
    calls: list[str] = []
    pre = register_optimizer_step_pre_hook(lambda *_: calls.append("pre"))
    post = register_optimizer_step_post_hook(lambda *_: calls.append("post"))
    try:
        torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)  # hooks torch's own SGD.step as well
        layer = nn.Linear(2, 2)
        opt = optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        assert isinstance(opt, torch.optim.SGD)
        for _ in range(3):
            opt.zero_grad()
            layer(torch.ones(1, 2)).sum().backward()
            opt.step()
    finally:
        pre.remove()
        post.remove()
    assert calls == ["pre", "post"] * 3


def test_add_param_group_still_validates():
    opt = optim.Adam(nn.Linear(2, 2).parameters(), lr=1e-3)
    extra = nn.Parameter(torch.zeros(2))
    opt.add_param_group({"params": [extra], "lr": 1e-2})
    assert opt.param_groups[1]["lr"] == 1e-2 and opt.param_groups[1]["betas"] == (0.9, 0.999)
    with pytest.raises(ValueError, match="appear in more than one parameter group"):
        opt.add_param_group({"params": [extra]})


def test_a_fit_imports_no_dynamo():
    code = textwrap.dedent(
        """
        import sys
        from shrinkviz.data import load_dataset
        from shrinkviz.loop.train import TrainConfig, fit
        from shrinkviz.models import create_model
        ds = load_dataset("digits").subset(train=128, val=32, test=32)
        for preset in ("shrinkbench", "adam_fast"):
            fit(create_model("tiny_mlp", dataset=ds), ds, TrainConfig.preset(preset).replace(epochs=1),
                progress=False)
        print("torch._dynamo" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
