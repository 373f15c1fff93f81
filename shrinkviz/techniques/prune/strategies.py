"""Pruning strategies: scoring functions in a registry, kept apart from mask selection.

A strategy only says how important each weight is: ``score(module, name, weight, ctx) -> Tensor`` of the
weight's shape (higher = keep). Selecting which weights go (one global threshold or the same fraction
per tensor, exact counts, deterministic ties) and attaching masks is done once, in
:func:`shrinkviz.techniques.prune.prune`, for every strategy. So a new method is a few lines in a notebook cell:

Example:
    >>> import torch
    >>> @register_strategy("example_taylor", scope="layer", needs_data=True, overwrite=True)
    ... def taylor(module, name, weight, ctx):
    ...     return (weight * ctx.gradient(name)) ** 2
    >>> "example_taylor" in available_strategies()
    True

Built-ins (ShrinkBench's): ``global_weight`` / ``layer_weight`` (|w|), ``global_gradient`` /
``layer_gradient`` (|w * dL/dw|, gradients averaged over a few seeded batches of the training split),
``global_activation`` / ``layer_activation`` (|w| x mean |input activation| of the weight's input
channel or feature, from forward hooks), and ``random`` (layerwise, reproducible per seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkviz.core.device import model_device
from shrinkviz.core.layers import named_layers
from shrinkviz.core.registry import Registry
from shrinkviz.data import Dataset, Normalizer, batches

SCOPES = ("global", "layer")
SCORE_BATCHES = 4
"""Batches of the training split used for gradient and activation scores."""
SCORE_BATCH_SIZE = 128

ScoreFn = Callable[[nn.Module, str, torch.Tensor, "ScoreContext"], torch.Tensor]


class ScoreContext:
    """What a scoring function may use besides the weight: the model, the data, a seeded generator,
    and lazily computed gradients and input-activation magnitudes (computed once per pruning call).

    Attributes:
        model: the model being pruned (in eval mode while scores are computed).
        data: the dataset given to ``prune`` (None when none was given).
        seed: the pruning seed; ``generator`` is a CPU generator seeded with it.
        strategy: name of the strategy being run (for messages).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset | None,
        seed: int,
        strategy: str,
        n_batches: int = SCORE_BATCHES,
        batch_size: int = SCORE_BATCH_SIZE,
    ) -> None:
        self.model, self.data, self.seed, self.strategy = model, data, seed, strategy
        self.generator = torch.Generator().manual_seed(seed)
        self.n_batches, self.batch_size = n_batches, batch_size
        self._grads: dict[str, torch.Tensor] | None = None
        self._acts: dict[str, torch.Tensor] | None = None

    def batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``n_batches`` batches of the seeded, shuffled, un-augmented training split."""
        if self.data is None:
            raise ValueError(
                f"strategy {self.strategy!r} needs data: pass data=<Dataset or dataset name> "
                "(its training split is used to score weights)"
            )
        device = model_device(self.model)
        normalize = Normalizer(self.data.mean, self.data.std)
        gen = torch.Generator().manual_seed(self.seed)
        out = []
        for batch in batches(self.data.train, self.batch_size, normalize, device, gen, "none"):
            out.append(batch)
            if len(out) == self.n_batches:
                break
        return out

    def gradient(self, name: str) -> torch.Tensor:
        """dL/d(parameter ``name``) of the cross-entropy, averaged over :meth:`batches` (eval mode)."""
        if self._grads is None:
            self._grads = self._compute_gradients()
        if name not in self._grads:
            raise KeyError(f"{name!r} is not a parameter of the model")
        return self._grads[name]

    def input_magnitude(self, name: str) -> torch.Tensor:
        """Mean |input| of the layer owning parameter ``name``, per input channel (Conv2d) or feature
        (Linear), averaged over :meth:`batches`, shaped to broadcast against its weight."""
        if self._acts is None:
            self._acts = self._compute_activations()
        layer, _, _ = name.rpartition(".")
        if layer not in self._acts:
            raise KeyError(
                f"{name!r} does not belong to a Conv2d / Linear layer that ran in the forward pass"
            )
        module = self.model.get_submodule(layer)
        act = self._acts[layer]
        if isinstance(module, nn.Linear):
            return act.view(1, -1)
        groups, out_ch = module.groups, module.out_channels
        per_group = act.view(groups, -1)  # groups x (in / groups)
        return per_group.repeat_interleave(out_ch // groups, dim=0).view(out_ch, -1, 1, 1)

    def _compute_gradients(self) -> dict[str, torch.Tensor]:
        named = [(n, p) for n, p in self.model.named_parameters()]
        flags = [p.requires_grad for _, p in named]
        sums = [torch.zeros_like(p) for _, p in named]
        was_training = self.model.training
        self.model.eval()  # no BatchNorm statistics change: scoring has no side effects
        try:
            for _, p in named:
                p.requires_grad_(True)
            data = self.batches()
            for x, y in data:
                loss = F.cross_entropy(self.model(x), y)
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                for acc, g in zip(sums, grads, strict=True):
                    if g is not None:
                        acc += g
        finally:
            self.model.train(was_training)
            for (_, p), flag in zip(named, flags, strict=True):
                p.requires_grad_(flag)
        return {n: acc / len(data) for (n, _), acc in zip(named, sums, strict=True)}

    @torch.no_grad()
    def _compute_activations(self) -> dict[str, torch.Tensor]:
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}

        def hook(name: str):
            def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                x = args[0].detach().abs()
                if isinstance(module, nn.Linear):
                    x = x.reshape(-1, x.shape[-1])
                    dims, n = (0,), x.shape[0]
                else:
                    dims, n = (0, 2, 3), x.shape[0] * x.shape[2] * x.shape[3]
                sums[name] = sums.get(name, 0) + x.sum(dim=dims)
                counts[name] = counts.get(name, 0) + n

            return record

        handles = [m.register_forward_hook(hook(n)) for n, m, _ in named_layers(self.model)]
        was_training = self.model.training
        self.model.eval()
        try:
            for x, _ in self.batches():
                self.model(x)
        finally:
            self.model.train(was_training)
            for handle in handles:
                handle.remove()
        return {name: sums[name] / counts[name] for name in sums}


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its scoring function, scope (``global`` threshold or per-``layer``
    fraction) and whether it needs data."""

    name: str
    score: ScoreFn
    scope: str
    needs_data: bool


STRATEGIES: Registry[Strategy] = Registry("pruning strategy")
"""Registered pruning strategies by name (built-in and user-registered)."""


def register_strategy(
    name: str,
    score: ScoreFn | None = None,
    *,
    scope: str | None = None,
    needs_data: bool | None = None,
    overwrite: bool = False,
) -> Any:
    """Register a scoring function under ``name`` (usable as a decorator).

    Args:
        name: the strategy name used by ``prune``, experiments, sweeps and widgets.
        score: ``score(module, name, weight, ctx) -> Tensor`` of ``weight``'s shape, higher = keep.
            ``name`` is the qualified parameter name, ``ctx`` a :class:`ScoreContext`. A callable object
            may carry ``scope`` / ``needs_data`` attributes instead of passing them here.
        scope: ``"global"`` (one threshold over all prunable tensors) or ``"layer"`` (the same fraction
            removed from each tensor); default ``score.scope`` or ``"global"``.
        needs_data: the score uses ``ctx.gradient`` / ``ctx.input_magnitude`` / ``ctx.batches`` (prune
            then refuses to run without data); default ``score.needs_data`` or False.
        overwrite: replace an existing strategy of that name.

    Returns:
        ``score`` (or, used as a decorator without ``score``, a decorator returning the function).

    Example:
        >>> class Squared:
        ...     scope = "global"
        ...     def __call__(self, module, name, weight, ctx):
        ...         return weight ** 2
        >>> _ = register_strategy("example_squared", Squared(), overwrite=True)
        >>> get_strategy("example_squared").scope
        'global'
        >>> STRATEGIES.unregister("example_squared")
    """
    if score is None:
        return lambda fn: register_strategy(name, fn, scope=scope, needs_data=needs_data, overwrite=overwrite)
    if not callable(score):
        raise TypeError(
            f"strategy {name!r}: score must be callable(module, name, weight, ctx), got {score!r}"
        )
    scope = scope if scope is not None else getattr(score, "scope", "global")
    if scope not in SCOPES:
        raise ValueError(f"strategy {name!r}: scope={scope!r}; valid: {', '.join(SCOPES)}")
    needs = bool(needs_data if needs_data is not None else getattr(score, "needs_data", False))
    STRATEGIES.register(name, Strategy(name, score, scope, needs), overwrite=overwrite)
    return score


def available_strategies() -> list[str]:
    """Names accepted by :func:`shrinkviz.techniques.prune.prune` (built-in and registered)."""
    return STRATEGIES.names()


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; ValueError listing the valid names otherwise."""
    return STRATEGIES.get(name, "strategy")


def weight_magnitude(module: nn.Module, name: str, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """|w| (ShrinkBench's MagWeight)."""
    return weight.abs()


def gradient_magnitude(module: nn.Module, name: str, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """|w * dL/dw| (ShrinkBench's MagGrad)."""
    return (weight * ctx.gradient(name)).abs()


def activation_magnitude(
    module: nn.Module, name: str, weight: torch.Tensor, ctx: ScoreContext
) -> torch.Tensor:
    """|w| x mean |input| of the weight's input channel / feature (ShrinkBench's MagAct); |b| for biases."""
    if weight.dim() == 1:
        return weight.abs()
    return weight.abs() * ctx.input_magnitude(name)


def random_scores(module: nn.Module, name: str, weight: torch.Tensor, ctx: ScoreContext) -> torch.Tensor:
    """Uniform random scores from the seeded generator (reproducible per seed)."""
    return torch.rand(weight.shape, generator=ctx.generator).to(weight.device)


for _scope in SCOPES:
    register_strategy(f"{_scope}_weight", weight_magnitude, scope=_scope)
    register_strategy(f"{_scope}_gradient", gradient_magnitude, scope=_scope, needs_data=True)
    register_strategy(f"{_scope}_activation", activation_magnitude, scope=_scope, needs_data=True)
register_strategy("random", random_scores, scope="layer")


def check_scores(strategy: str, name: str, scores: Any, weight: torch.Tensor) -> torch.Tensor:
    """Validate a strategy's output for parameter ``name``; returns flat float32 scores with infinities
    clamped to the finite range (so already-pruned weights, scored -inf, always rank last)."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(
            f"strategy {strategy!r} returned {type(scores).__name__} for {name!r}; expected a Tensor"
        )
    if tuple(scores.shape) != tuple(weight.shape):
        raise ValueError(
            f"strategy {strategy!r} returned scores of shape {tuple(scores.shape)} for "
            f"{name!r}, whose shape is {tuple(weight.shape)}"
        )
    scores = scores.detach().to(device=weight.device, dtype=torch.float32).reshape(-1)
    if torch.isnan(scores).any():
        raise ValueError(f"strategy {strategy!r} returned NaN scores for {name!r}")
    big = torch.finfo(torch.float32).max
    return scores.clamp(-big, big)


def apportion(total: int, sizes: list[int], caps: list[int]) -> list[int]:
    """Split ``total`` kept weights across tensors in proportion to their sizes, each at most its cap
    (weights still alive), exactly (largest remainders, ties to the earlier tensor).

    Example:
        >>> apportion(10, [10, 10, 10], [10, 10, 10])
        [4, 3, 3]
    """
    if total > sum(caps):
        raise ValueError(f"cannot keep {total} weights: only {sum(caps)} are left")
    fixed: dict[int, int] = {}
    active = list(range(len(sizes)))
    while True:
        rest = total - sum(fixed.values())
        weight_sum = sum(sizes[i] for i in active)
        over = [i for i in active if rest * sizes[i] > caps[i] * weight_sum]
        if not over:
            break
        for i in over:
            fixed[i] = caps[i]
        active = [i for i in active if i not in fixed]
    quotas = dict(fixed)
    if active:
        for i in active:
            quotas[i] = rest * sizes[i] // weight_sum
        left = rest - sum(quotas[i] for i in active)
        by_remainder = sorted(active, key=lambda i: (-(rest * sizes[i] % weight_sum), i))
        for i in by_remainder[:left]:
            quotas[i] += 1
    return [quotas[i] for i in range(len(sizes))]


def target_nonzero(total: int, compression: float) -> int:
    """Nonzero parameters that give ``total / nonzero == compression``, rounded half up."""
    return math.floor(total / compression + 0.5)
