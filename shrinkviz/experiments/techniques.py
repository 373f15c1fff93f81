"""What a run does to its baseline: one registered handler per technique, dispatched by the runner.

A handler is ``handler(exp, baseline, data, progress) -> Result``: it compresses (a copy of) the
pretrained ``baseline`` as the :class:`~shrinkviz.experiments.experiment.Experiment` says, with the
training data of the compression stages (``data``; its val/test splits are the experiment's), and returns
the verb contract's :class:`~shrinkviz.techniques.result.Result`. The built-ins are ``baseline``,
``prune``, ``quant``, ``distill`` and ``pipeline`` (:attr:`Experiment.method` picks one). A new technique
is one registered function, selected with ``Experiment(technique={"name": ..., "params": {...}})``.

Example:
    >>> import copy
    >>> @register_technique("example_identity", overwrite=True)
    ... def identity(exp, baseline, data, progress):
    ...     return Result(copy.deepcopy(baseline), [])
    >>> "example_identity" in available_techniques()
    True
    >>> TECHNIQUES.unregister("example_identity")
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

from shrinkviz.core.registry import Registry
from shrinkviz.techniques.result import Result

TechniqueHandler = Callable[[Any, nn.Module, Any, bool], Result]

TECHNIQUES: Registry[TechniqueHandler] = Registry("technique")
"""Technique handlers by name."""

BUILTIN_TECHNIQUES = ("baseline", "prune", "quant", "distill", "pipeline")
"""The techniques an Experiment selects through its prune / quant / distill / pipeline sections."""


PARAM_CHECKS: dict[str, Callable[[dict[str, Any]], Any]] = {}
"""technique -> ``check(params)`` raising ValueError for bad parameters, called when an Experiment is built
(so a bad grid fails before any run starts)."""

USES: dict[str, tuple[str, ...]] = {}
"""technique -> the built-in sections it reads besides its params (``'quant'``: it applies
``Experiment.quant`` itself, which may then be set beside it and fills the ``quantization`` column)."""


def register_technique(
    name: str,
    handler: TechniqueHandler | None = None,
    *,
    overwrite: bool = False,
    check: Callable[[dict[str, Any]], Any] | None = None,
    uses: tuple[str, ...] = (),
) -> Any:
    """Register a technique handler (usable as a decorator); experiments, sweeps, the CLI and the report
    then accept its name in ``Experiment.technique.name``. ``check(params)``, if given, raises ValueError
    for parameters the handler cannot take; it runs when the Experiment is built. ``uses`` names built-in
    sections the handler applies itself (only ``'quant'``), which may then be set beside the technique.

    Raises:
        ValueError: a built-in name, or a taken one without ``overwrite=True``.
    """
    if handler is None:
        return lambda fn: register_technique(name, fn, overwrite=overwrite, check=check, uses=uses)
    if name in BUILTIN_TECHNIQUES and name in TECHNIQUES and not overwrite:
        raise ValueError(f"technique {name!r} is built in; register yours under another name")
    if not callable(handler):
        raise TypeError(
            f"technique {name!r}: handler must be callable(exp, baseline, data, progress) -> Result"
        )
    if set(uses) - {"quant"}:
        raise ValueError(f"technique {name!r}: uses={uses!r}; a technique can apply only the 'quant' section")
    registered = TECHNIQUES.register(name, handler, overwrite=overwrite)
    USES[name] = tuple(uses)
    if check is None:
        PARAM_CHECKS.pop(name, None)
    else:
        PARAM_CHECKS[name] = check
    return registered


def check_params(name: str, params: dict[str, Any]) -> None:
    """Raise ValueError when ``params`` do not suit the registered technique ``name`` (no check: accepted)."""
    check = PARAM_CHECKS.get(name)
    if check is not None:
        check(params)


def available_techniques() -> list[str]:
    """Registered technique names (the built-ins and yours)."""
    return TECHNIQUES.names()


def compress(exp: Any, baseline: nn.Module, data: Any, progress: bool = False) -> Result:
    """Run the experiment's technique on its baseline: the handler of ``exp.method``, on the training
    examples ``exp.finetune.examples`` selects (val/test unchanged).

    Raises:
        TypeError: a handler that did not return a Result (naming it).
    """
    handler = TECHNIQUES.get(exp.method)
    if exp.method != "baseline" and exp.finetune.examples is not None:
        data = data.subset(train=exp.finetune.examples)
    result = handler(exp, baseline, data, progress)
    if not isinstance(result, Result):
        raise TypeError(
            f"technique {exp.method!r} returned {type(result).__name__}; return a shrinkviz Result"
        )
    return result


def _train_config(exp: Any, epochs: int | None = None) -> Any:
    cfg = exp.finetune.train_config()
    return cfg if epochs is None else cfg.replace(epochs=epochs)


@register_technique("baseline")
def _baseline(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    hist = getattr(baseline, "shrinkviz_manifest", {}).get("history", [])
    return Result(baseline, [{"stage": "pretrain", **h} for h in hist])


@register_technique("prune")
def _prune(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    from shrinkviz.techniques.prune import prune

    return prune(
        baseline,
        data,
        strategy=exp.prune.strategy,
        compression=exp.prune.compression,
        cfg=_train_config(exp),
        seed=exp.seed,
        progress=progress,
        prune_bias=exp.prune.bias,
        score_batches=exp.prune.score_batches,
    )


@register_technique("quant")
def _quant(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    from shrinkviz.techniques.quant import quantize

    cfg = _train_config(exp, exp.quant.epochs)
    return quantize(baseline, data, method=exp.quant.method, cfg=cfg, seed=exp.seed, progress=progress)


@register_technique("distill")
def _distill(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    from shrinkviz.techniques.distill import distill

    if exp.distill.student:
        from shrinkviz.models import create_model

        student = create_model(exp.distill.student, dataset=data, seed=exp.seed)
    else:
        student = copy.deepcopy(baseline)
    return distill(
        student,
        data,
        cfg=_train_config(exp, exp.distill.epochs),
        teacher=baseline,
        temperature=exp.distill.temperature,
        alpha=exp.distill.alpha,
        seed=exp.seed,
        progress=progress,
    )


@register_technique("pipeline")
def _pipeline(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    from shrinkviz.techniques.pipeline import pipeline

    kwargs: dict[str, Any] = (
        {"strategy": exp.prune.strategy, "compression": exp.prune.compression} if exp.prune.strategy else {}
    )
    return pipeline(
        baseline,
        data,
        exp.pipeline.order,
        epochs=exp.pipeline.epochs,
        cfg=_train_config(exp),
        teacher=baseline,
        temperature=exp.distill.temperature,
        alpha=exp.distill.alpha,
        seed=exp.seed,
        progress=progress,
        **kwargs,
    )


CHANNEL_PARAMS = {"keep": "fraction of channels kept per group, in (0, 1]", "norm": "'l1' or 'l2'"}
"""Parameters of the ``prune_channels`` technique."""


def channel_params(params: dict[str, Any]) -> tuple[float, str]:
    """``(keep, norm)`` of a ``prune_channels`` technique's params, checked.

    Example:
        >>> channel_params({"keep": 0.5})
        (0.5, 'l2')
        >>> channel_params({"keep": 0.5, "norm": "l3"})
        Traceback (most recent call last):
        ...
        ValueError: Experiment.technique.params.norm='l3': allowed values: 'l1', 'l2'
    """
    from shrinkviz.core.registry import did_you_mean

    unknown = sorted(set(params) - set(CHANNEL_PARAMS))
    if unknown:
        hint = did_you_mean(unknown[0], list(CHANNEL_PARAMS)).strip()
        raise ValueError(
            f"Experiment.technique.params: unknown parameter(s) {', '.join(map(repr, unknown))} of "
            f"'prune_channels';{' ' + hint if hint else ''} valid: "
            + "; ".join(f"{k} ({v})" for k, v in CHANNEL_PARAMS.items())
        )
    keep, norm = params.get("keep"), params.get("norm", "l2")
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not 0 < keep <= 1:
        raise ValueError(
            f"Experiment.technique.params.keep={keep!r}: give the fraction of channels kept, in (0, 1]"
        )
    if norm not in ("l1", "l2"):
        raise ValueError(f"Experiment.technique.params.norm={norm!r}: allowed values: 'l1', 'l2'")
    return float(keep), str(norm)


@register_technique("prune_channels", check=channel_params, uses=("quant",))
def _prune_channels(exp: Any, baseline: nn.Module, data: Any, progress: bool) -> Result:
    """Structured pruning (whole channels removed: a smaller dense network), finetuned with the experiment's
    preset, then INT8 when ``Experiment.quant`` asks: ``technique={"name": "prune_channels", "params":
    {"keep": 0.5}}``, optionally with ``quant={"method": "ptq"}``."""
    from shrinkviz.techniques.prune import prune_channels

    keep, norm = channel_params(exp.technique.params)
    result = prune_channels(
        baseline, data, keep=keep, norm=norm, cfg=_train_config(exp), seed=exp.seed, progress=progress
    )
    if exp.quant.method == "none":
        return result
    quantized = _quant(exp, result.model, data, progress)  # the quant technique, on the smaller model
    return Result(quantized.model, [*result.history, *quantized.history])
