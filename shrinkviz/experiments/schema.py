"""The one results schema of shrinkviz.

Every finished run is one row of the ``runs`` table; every epoch of every training stage is one row of
the ``history`` table; every prunable layer of every run is one row of the ``layers`` table. The store
writes these, the statistics and figures read them. Units are in the column names; accuracies are
fractions in [0, 1].

Example:
    >>> from shrinkviz.experiments.schema import RUN_COLUMNS
    >>> RUN_COLUMNS["latency_ms_p50"].unit
    'ms'
"""

from __future__ import annotations

from dataclasses import dataclass


def stage_epochs_text(order: str, epochs: object) -> str:
    """The ``stage_epochs`` value of a run: its stages' epochs joined by '/', '' when there is no pipeline.

    Example:
        >>> stage_epochs_text("PQD", (2, 4, 4)), stage_epochs_text("", (20, 40, 40))
        ('2/4/4', '')
    """
    return "/".join(str(e) for e in epochs or ()) if order else ""


@dataclass(frozen=True)
class Column:
    """One documented column: its pandas dtype kind, unit and meaning."""

    dtype: str  # "str", "float", "int", "bool"
    unit: str
    doc: str


RUN_COLUMNS: dict[str, Column] = {
    # identity and provenance
    "run_id": Column("str", "", "stable hash of the canonical experiment config"),
    "status": Column("str", "", "'ok' or 'failed'"),
    "error": Column("str", "", "the error of a failed run, empty otherwise"),
    "started_at": Column("str", "ISO-8601 UTC", "when the run started"),
    "finished_at": Column("str", "ISO-8601 UTC", "when the run finished"),
    "duration_s": Column("float", "s", "wall time of the run"),
    "measure_s": Column(
        "float",
        "s",
        "part of duration_s spent measuring the deployed model (test evaluation, counts, size; latency when "
        "timed with the run)",
    ),
    "shrinkviz_version": Column("str", "", "library version that produced the row"),
    "torch_version": Column("str", "", "torch version that produced the row"),
    "device": Column("str", "", "training device (cpu, cuda)"),
    "config_json": Column("str", "", "the full canonical experiment config as JSON"),
    # config factors (flattened from the experiment config)
    "dataset": Column("str", "", "dataset registry name"),
    "model": Column("str", "", "architecture registry name"),
    "baseline_recipe": Column(
        "str", "", "recipe of the pretrained baseline (``<recipe>+bf16`` when trained in bfloat16)"
    ),
    "baseline_seed": Column("int", "", "seed of the pretrained baseline"),
    "method": Column("str", "", "what was done: baseline, prune, quant, distill or pipeline"),
    "strategy": Column("str", "", "pruning strategy ('' when no pruning)"),
    "compression": Column("float", "x", "target compression ratio (1 when no pruning)"),
    "finetune": Column("str", "", "finetuning preset name (``<preset>+bf16`` when trained in bfloat16)"),
    "order": Column("str", "", "pipeline stage order such as 'PQD' ('' for single techniques)"),
    "stage_epochs": Column(
        "str", "epochs", "epochs of each pipeline stage in order, e.g. '2/4/4' ('' if none)"
    ),
    "quantization": Column("str", "", "'none', 'qat' or 'ptq'"),
    "seed": Column("int", "", "seed of the compression run"),
    "design": Column("str", "", "the arm of a study the run belongs to (Experiment.design; '' if none)"),
    # accuracy (test split; model selection never uses it)
    "top1": Column("float", "fraction", "test top-1 accuracy of the deployed model"),
    "top5": Column("float", "fraction", "test top-5 accuracy of the deployed model"),
    "val_top1": Column("float", "fraction", "validation top-1 accuracy"),
    "baseline_top1": Column("float", "fraction", "test top-1 of the uncompressed baseline"),
    "test_correct": Column(
        "str",
        "n:base64 bits",
        "which test examples the deployed model got right (top-1), in split order: the count, ':', and "
        "numpy.packbits (little bit order) in base64 (shrinkviz.metrics.paired.unpack_correct); for paired tests",
    ),
    # counts
    "params": Column("int", "count", "all parameters, BatchNorm and classifier included"),
    "params_nonzero": Column("int", "count", "nonzero parameters"),
    "compression_ratio": Column("float", "x", "achieved: params / params_nonzero"),
    "macs": Column("int", "count", "dense multiply-accumulates for one input"),
    "macs_nonzero": Column("int", "count", "multiply-accumulates with nonzero weights"),
    "speedup_theoretical": Column("float", "x", "macs of the baseline / macs_nonzero"),
    # deployment cost
    "size_bytes_raw": Column("int", "bytes", "deployable artefact on disk"),
    "size_bytes_gzip": Column("int", "bytes", "deployable artefact gzip-compressed"),
    "latency_ms_p50": Column("float", "ms", "median measured latency"),
    "latency_ms_p90": Column("float", "ms", "90th percentile measured latency"),
    "latency_runtime": Column("str", "", "runtime of the latency figure (eager, compiled, onnxruntime)"),
    "latency_threads": Column("int", "count", "threads used for the latency figure"),
    "latency_batch": Column("int", "count", "batch size of the latency figure"),
    "cpu_model": Column("str", "", "CPU the latency was measured on"),
    "latency_vs_baseline": Column(
        "float", "x", "latency / the baseline's FP32 latency, timed side by side (median over rounds)"
    ),
    "latency_vs_baseline_min": Column("float", "x", "lowest per-round ratio to the baseline"),
    "latency_vs_baseline_max": Column("float", "x", "highest per-round ratio to the baseline"),
    "machine_id": Column("str", "", "hash of the CPU model, ISA features and cores the latency ran on"),
}
"""Columns of the runs table. The ``latency_*`` columns hold the first runtime's latest figures (see
:data:`LATENCY_COLUMNS` for every runtime and every sitting)."""

LATENCY_COLUMNS: dict[str, Column] = {
    "run_id": Column("str", "", "run whose deployed artefact was timed"),
    "runtime": Column("str", "", "runtime of the timing (eager, compiled, onnxruntime, openvino, sparse)"),
    "choice": Column("str", "", "'fastest' when the row is one candidate of a fastest choice, '' otherwise"),
    "fastest": Column("bool", "", "the winner of its fastest choice (False for plain rows)"),
    "runtime_detail": Column("str", "", "what exactly ran (library version, form)"),
    "dtype": Column("str", "", "deployment form: fp32 or int8"),
    "threads": Column("int", "count", "pinned intra-op threads"),
    "batch": Column("int", "count", "inputs per call"),
    "latency_ms_p50": Column("float", "ms", "median latency of the run's artefact over all timed calls"),
    "latency_ms_p90": Column("float", "ms", "90th percentile latency"),
    "baseline_ms_p50": Column("float", "ms", "median latency of the baseline, timed in the same rounds"),
    "baseline_runtime": Column("str", "", "runtime the baseline (dense FP32) was timed on"),
    "latency_vs_baseline": Column("float", "x", "median over rounds of run / baseline (same rounds)"),
    "latency_vs_baseline_min": Column("float", "x", "lowest per-round ratio"),
    "latency_vs_baseline_max": Column("float", "x", "highest per-round ratio"),
    "rounds": Column("int", "count", "interleaved rounds the ratio is taken over"),
    "measured_at": Column("str", "ISO-8601 UTC", "when the timing was taken"),
    "sitting": Column("str", "", "'run' for the timing taken with the run, else the remeasure session id"),
    "machine_id": Column("str", "", "short hash of CPU model, ISA features and cores"),
    "cpu_model": Column("str", "", "CPU model name"),
    "cpu_isa": Column(
        "str", "", "ISA features deciding INT8 speed (avx2, avx512_vnni, avx_vnni, amx_int8, ...)"
    ),
    "cpu_cores": Column("int", "count", "logical CPUs of the machine"),
    "torch_version": Column("str", "", "torch version"),
    "onnxruntime_version": Column("str", "", "ONNX Runtime version ('' when not installed)"),
    "openvino_version": Column("str", "", "OpenVINO version ('' when not installed)"),
    "error": Column("str", "", "why this runtime has no figure ('' when timed)"),
}
"""The latency table: one row per (run, runtime, sitting). Stores written before it existed give one row
per run from the runs table, with the side-by-side columns empty."""

HISTORY_COLUMNS: dict[str, Column] = {
    "run_id": Column("str", "", "run the epoch belongs to"),
    "stage": Column("str", "", "training stage: pretrain, finetune, P, Q, D"),
    "epoch": Column("int", "", "epoch within the stage, from 1"),
    "lr": Column("float", "", "learning rate at the end of the epoch"),
    "train_loss": Column("float", "", "mean total training loss"),
    "task_loss": Column("float", "", "mean cross-entropy part of the loss"),
    "kd_loss": Column("float", "", "mean distillation part of the loss (NaN without KD)"),
    "train_top1": Column("float", "fraction", "training top-1 (augmented batches)"),
    "val_loss": Column("float", "", "validation loss"),
    "val_top1": Column("float", "fraction", "validation top-1"),
    "val_top5": Column("float", "fraction", "validation top-5"),
    "sparsity": Column("float", "fraction", "fraction of prunable weights that are zero"),
    "eval_s": Column(
        "float", "s", "part of epoch_s spent evaluating (validation; the test pass of a test-selected preset)"
    ),
    "epoch_s": Column("float", "s", "wall time of the epoch, evaluation included"),
}

LAYER_COLUMNS: dict[str, Column] = {
    "run_id": Column("str", "", "run the layer belongs to"),
    "layer": Column("str", "", "qualified module name"),
    "kind": Column("str", "", "Conv2d or Linear"),
    "shape": Column("str", "", "weight shape such as '16x3x3x3'"),
    "params": Column("int", "count", "weight elements"),
    "nonzero": Column("int", "count", "nonzero weight elements"),
    "sparsity": Column("float", "fraction", "1 - nonzero / params"),
    "macs": Column("int", "count", "dense multiply-accumulates of the layer"),
    "macs_nonzero": Column("int", "count", "multiply-accumulates with nonzero weights"),
}

METRIC_COLUMNS: tuple[str, ...] = (
    "top1",
    "top5",
    "val_top1",
    "params",
    "params_nonzero",
    "compression_ratio",
    "macs",
    "macs_nonzero",
    "speedup_theoretical",
    "size_bytes_raw",
    "size_bytes_gzip",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_vs_baseline",
)
"""Numeric outcome columns (what figures put on their axes)."""

FACTOR_COLUMNS: tuple[str, ...] = (
    "dataset",
    "model",
    "baseline_recipe",
    "baseline_seed",
    "method",
    "strategy",
    "compression",
    "finetune",
    "order",
    "stage_epochs",
    "quantization",
    "seed",
    "design",
)
"""Config columns (what figures colour, facet and filter by)."""
