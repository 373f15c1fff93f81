"""The ``shrinkviz`` command: ``demo``, ``sweep CONFIG``, ``report`` and ``remeasure``. This module is the user interface,
so it prints; the library modules it calls do not.

Examples::

    shrinkviz demo                       # pretrained MnistNet on Fashion-MNIST, a small sweep, an HTML report
    shrinkviz demo --profile smoke       # the same in about a minute (smaller data and epochs)
    shrinkviz sweep sweep.yaml --workers 2
    shrinkviz report --store data_cache/results --out report.html
    shrinkviz report --store STORE --claims notebooks/claims/02_shrinkbench_confounders.toml --tables docs/02/
    shrinkviz remeasure --store data_cache/results --runtime eager --runtime openvino   # re-time, one sitting

A sweep config (JSON or YAML) holds a base experiment (or a list ``experiments``) and a grid::

    base: {model: tiny_cnn, data: {name: digits}, finetune: {preset: adam_fast, epochs: 1}}
    grid: {strategy: [global_weight, random], compression: [2, 4], seed: [0, 1]}
    store: results/           # optional, relative to the config file
    report: results/report.html  # optional
    security: {tls_ca_file: ca.pem, tls_cert: cert.pem, tls_key: key.pem}  # optional: Dask over TLS

Before anything trains, a sweep checks the store (a writable folder with room), every name, the data and
every grid point (``shrinkviz.experiments.preflight``). Mistakes print one line,
``shrinkviz: error: ...``, with what to do, and exit with status 2. The Dask dashboard is off unless
``--dashboard`` is given (then on 127.0.0.1); a remote scheduler over TLS::

    shrinkviz sweep sweep.yaml --scheduler tls://host:8786 --tls-ca-file ca.pem --tls-cert me.pem --tls-key me.key
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from shrinkviz.core.registry import did_you_mean, unknown_name
from shrinkviz.experiments.configfile import CONFIG_KEYS, SECURITY_KEYS, load_config
from shrinkviz.experiments.profiles import PROFILES, profile

__all__ = ["CONFIG_KEYS", "build_parser", "demo_experiments", "load_config", "main"]


def demo_experiments(profile_name: str = "full") -> list[Any]:
    """The demo's runs: the baseline, pruning strategies x compressions, INT8 QAT and the PQD pipeline.

    ``full``: MnistNet on all of Fashion-MNIST with the default pretrained recipe; compression stages
    finetune one epoch (``finetune_sgd_cosine``) on the first 8,000 training images; PQD with 1/2/2 epochs
    (the paper's 20/40/40 shape); eager latency at batch 1 on 1 thread. ``smoke``: the same code path on
    1,000 / 250 / 500 images with a 1-epoch baseline and fewer operating points.
    """
    from shrinkviz.experiments.experiment import Experiment
    from shrinkviz.experiments.sweep import expand

    if not profile(profile_name).smoke:  # validates the name too
        base = Experiment(
            model="mnistnet",
            data="fashion_mnist",
            baseline={"recipe": "default"},
            finetune={"preset": "finetune_sgd_cosine", "epochs": 1, "examples": 8000},
            latency={"runtimes": ["eager"], "threads": 1, "batch": 1, "rounds": 50, "min_time_s": 1.0},
        )
        grid = {"strategy": ["global_weight", "layer_weight", "random"], "compression": [2, 4, 8, 16]}
        stage_epochs = [1, 2, 2]
    else:
        base = Experiment(
            model="mnistnet",
            data={"name": "fashion_mnist", "train": 1000, "val": 250, "test": 500},
            baseline={"recipe": "default", "epochs": 1},
            finetune={"preset": "finetune_sgd_cosine", "epochs": 1},
            latency={"runtimes": ["eager"], "rounds": 5, "warmup": 1, "min_time_s": 0.05},
        )
        grid = {"strategy": ["global_weight", "random"], "compression": [2, 8]}
        stage_epochs = [1, 1, 1]
    qat = base.replace(quantization="qat")
    pqd = base.replace(
        strategy="global_weight",
        compression=8,
        quantization="qat",
        order="PQD",
        stage_epochs=stage_epochs,
        **{"distill.enabled": True},
    )
    return [base, *expand(base, **grid), qat, pqd]


def _security(args: argparse.Namespace, config: dict[str, Any] | None = None) -> Any:
    """A Dask TLS ``Security`` from --tls-* flags or a config's ``security:`` block (flags win), or None."""
    from shrinkviz.experiments.executors import tls_security

    block = dict((config or {}).get("security") or {})
    unknown = [k for k in block if k not in SECURITY_KEYS]
    if unknown:
        raise unknown_name("security key", unknown[0], SECURITY_KEYS)
    ca = getattr(args, "tls_ca_file", None) or block.get("tls_ca_file")
    cert = getattr(args, "tls_cert", None) or block.get("tls_cert")
    key = getattr(args, "tls_key", None) or block.get("tls_key")
    if not (ca or cert or key):
        return None
    if not (ca and cert):
        raise ValueError(
            "TLS needs at least --tls-ca-file and --tls-cert (and --tls-key unless the key is in the cert)"
        )
    return tls_security(ca, cert, key)


def _executor(args: argparse.Namespace, config: dict[str, Any] | None = None) -> Any:
    from shrinkviz.experiments.executors import DaskExecutor

    security = _security(args, config)
    dashboard = bool(getattr(args, "dashboard", False))
    if getattr(args, "scheduler", None):
        if dashboard:
            raise ValueError(
                "--dashboard serves a local cluster's dashboard: use --workers N, or drop --dashboard (an "
                "existing cluster's dashboard is its scheduler's)"
            )
        if "://" not in args.scheduler:
            raise ValueError(
                f"--scheduler {args.scheduler!r}: expected an address like tcp://host:8786 (tls://host:8786 with TLS)"
            )
        return DaskExecutor(address=args.scheduler, security=security)
    if getattr(args, "workers", None) is not None:
        return DaskExecutor(n_workers=args.workers, dashboard=dashboard, security=security)
    if dashboard or security is not None:
        raise ValueError("--dashboard and --tls-* apply to Dask: add --workers N or --scheduler ADDRESS")
    return "auto"  # in-process or one single-threaded worker per core, by the grid's size (planning.py)


def _print_runs(runs: Any) -> None:
    from shrinkviz.viz._style import technique

    if runs.empty:
        return
    view = runs.assign(
        technique=technique(runs),
        size_kB=runs["size_bytes_gzip"] / 1000,
    )
    cols = [
        "technique",
        "strategy",
        "compression",
        "seed",
        "status",
        "top1",
        "compression_ratio",
        "size_kB",
        "latency_ms_p50",
        "latency_vs_baseline",
    ]
    cols = [c for c in cols if c in view.columns]
    print(view[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for row in runs[runs["status"] != "ok"].itertuples():
        print(
            f"  FAILED {row.run_id} ({row.method} {row.strategy} x{row.compression:g}): "
            f"{str(row.error).splitlines()[0]}"
        )


def _run_sweep(experiments: Any, store: Any, executor: Any, progress: bool, plugins: Any = ()) -> Any:
    from shrinkviz.experiments.sweep import sweep

    result = sweep(experiments, executor, store=store, progress=progress, plugins=plugins)
    print(
        f"{len(result.run_ids)} runs: {result.ran} ran ({result.failed} failed), {result.skipped} already "
        f"stored, in {result.elapsed_s:.1f} s" + (f"; {result.plan}" if result.plan else "")
    )
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    from shrinkviz.experiments.runner import load_baseline
    from shrinkviz.experiments.store import Store
    from shrinkviz.viz.report import write_report

    started = time.perf_counter()
    args.profile = profile(args.profile).name  # --profile, else $SHRINKVIZ_PROFILE, else full
    experiments = demo_experiments(args.profile)
    store = Store(args.store)
    base = experiments[0]
    print(
        f"shrinkviz demo ({args.profile} profile): {base.model} on {base.data.name}, {len(experiments)} runs; "
        f"results in {store.path}"
    )
    from shrinkviz.experiments.preflight import preflight

    preflight([e for e in experiments if not store.has(e.run_id)], store)  # before the baseline trains
    t0 = time.perf_counter()
    baseline = load_baseline(base, progress=not args.quiet)
    top1 = baseline.shrinkviz_manifest["metrics"]["test_top1"]
    print(
        f"baseline ({base.baseline.recipe} recipe, seed {base.baseline.seed}): test top-1 {top1:.4f} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    result = _run_sweep(experiments, store, _executor(args), not args.quiet)
    _print_runs(result.runs)
    out = write_report(
        result,
        args.out or store.path / "report.html",
        title=f"shrinkviz demo: {base.model} on {base.data.name} ({args.profile})",
    )
    print(f"report: {out}")
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return 1 if result.runs["status"].ne("ok").any() else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from shrinkviz.experiments.experiment import Experiment
    from shrinkviz.experiments.shipping import load_plugins
    from shrinkviz.experiments.store import Store
    from shrinkviz.experiments.sweep import expand
    from shrinkviz.viz.report import write_report

    config = load_config(args.config)
    plugins = load_plugins([*config.get("plugins", []), *(args.plugin or [])])  # before names are checked
    bases = config.get("experiments") or [config["base"]]
    if not isinstance(bases, list):
        raise ValueError(
            f"config {args.config}: 'experiments' must be a list of experiment configs, e.g. "
            "`experiments: [{model: tiny_mlp}]`"
        )
    grid = config.get("grid") or {}
    if not isinstance(grid, dict):
        raise ValueError(
            f"config {args.config}: 'grid' must map config fields to lists of values, e.g. `grid: {{seed: [0, 1]}}`"
        )
    experiments = expand([Experiment.from_dict(b or {}) for b in bases], **grid)
    executor = _executor(args, config)
    store = Store(args.store or config.get("store"))
    print(f"sweep {args.config}: {len(experiments)} runs; results in {store.path}")
    result = _run_sweep(experiments, store, executor, not args.quiet, plugins)
    _print_runs(result.runs)
    out = args.report or config.get("report")
    if out:
        print(
            f"report: {write_report(result, out, title=config.get('title') or f'shrinkviz sweep {args.config}')}"
        )
    return 1 if result.runs["status"].ne("ok").any() else 0


def cmd_report(args: argparse.Namespace) -> int:
    from shrinkviz.experiments.store import Store
    from shrinkviz.viz.report import write_report

    store = Store(args.store)
    if not store.path.exists():
        raise ValueError(f"store {store.path} does not exist; pass the folder a sweep wrote (--store DIR)")
    if not store.path.is_dir():
        raise ValueError(f"store {store.path} is a file, not a results folder; pass --store DIR")
    runs = store.runs()
    if runs.empty:
        raise ValueError(
            f"store {store.path} holds no runs"
            + (f" ({len(store.problems)} corrupt file(s))" if store.problems else "")
            + "; run `shrinkviz sweep CONFIG` into it first, or pass the folder a sweep wrote (--store DIR)"
        )
    for problem in store.problems:
        print(f"warning: skipped corrupt entry {problem}", file=sys.stderr)
    spec = None
    if args.claims:
        from shrinkviz.experiments.claims import ClaimSpec

        spec = ClaimSpec.load(args.claims)  # a bad spec fails here, before anything is written
    out = write_report(store, args.out, title=args.title, plotlyjs=args.plotlyjs, claims=spec)
    print(f"{len(runs)} runs from {store.path}")
    print(f"report: {out}")
    if args.tables:
        from shrinkviz.experiments.claims import export_tables

        for written in export_tables(store, args.tables):
            print(f"table: {written}")
    return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give N >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{value} workers: give N >= 1 (omit --workers to run in this process)"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``shrinkviz: error: ...``, with a did-you-mean
    for an invalid choice (subcommand, --profile, --plotlyjs)."""

    def error(self, message: str) -> NoReturn:
        match = re.match(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)", message)
        unrecognized = re.match(r"unrecognized arguments: (\S+)", message)
        if unrecognized:
            options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            for sub in self._subparsers._group_actions if self._subparsers else []:
                options += [o for p in sub.choices.values() for a in p._actions for o in a.option_strings]
            name = unrecognized.group(1)
            message = f"unknown option {name!r};" + (did_you_mean(name, sorted(set(options))) or "")
        if match:
            what, name, choices = match.groups()
            kind = "command" if what == "command" or what.startswith("{") else f"{what} value"
            message = str(unknown_name(kind, name, [c.strip(" '") for c in choices.split(",")]))
        print(
            f"shrinkviz: error: {message} (see shrinkviz {self.prog.split()[-1]} --help)"
            if " " in self.prog
            else f"shrinkviz: error: {message} (see shrinkviz --help)",
            file=sys.stderr,
        )
        raise SystemExit(2)


def cmd_remeasure(args: argparse.Namespace) -> int:
    from shrinkviz.core.io import cache_root
    from shrinkviz.experiments.remeasure import remeasure

    result = remeasure(
        args.store or cache_root() / "results",
        args.runtime or None,
        threads=args.threads,
        rounds=args.rounds,
    )
    done = result.latency
    errors = int((done["error"] != "").sum()) if len(done) else 0
    print(
        f"remeasure {result.session}: {done['run_id'].nunique() if len(done) else 0} runs, {len(done)} latency "
        f"rows ({errors} with an error), {len(result.skipped)} runs skipped, in {result.wall_s:.1f} s "
        f"({result.rows_per_s:.2f} rows/s)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``shrinkviz`` command."""
    parser = _Parser(
        prog="shrinkviz",
        description="Compress neural networks and judge the result: accuracy, size and measured CPU latency.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, executors: bool = True) -> None:
        p.add_argument("--store", help="results store folder (default: <cache root>/results)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        if executors:
            g = p.add_mutually_exclusive_group()
            g.add_argument(
                "--workers",
                type=_positive_int,
                metavar="N",
                help="run on a local Dask cluster of N >= 1 worker processes (default: in-process or one "
                "single-threaded worker per core, chosen from the grid's estimated training time)",
            )
            g.add_argument(
                "--scheduler",
                metavar="ADDRESS",
                help="run on an existing Dask cluster (tcp://host:8786, or tls://host:8786 with --tls-*)",
            )
            p.add_argument(
                "--dashboard",
                action="store_true",
                help="serve the local cluster's Dask dashboard on 127.0.0.1 (off by default)",
            )
            p.add_argument("--tls-ca-file", metavar="PEM", help="Dask TLS: CA certificate")
            p.add_argument("--tls-cert", metavar="PEM", help="Dask TLS: this client's certificate")
            p.add_argument("--tls-key", metavar="PEM", help="Dask TLS: this client's private key")

    demo = sub.add_parser("demo", help="pretrained baseline, a small compression sweep, an HTML report")
    demo.add_argument(
        "--profile",
        choices=PROFILES,
        help="smoke: about a minute; full: about 10-15 minutes on 2 "
        "cores (default: $SHRINKVIZ_PROFILE, else full)",
    )
    demo.add_argument("--out", help="report file (default: <store>/report.html)")
    common(demo)
    demo.set_defaults(func=cmd_demo)

    sweep = sub.add_parser("sweep", help="run a sweep described by a JSON or YAML file")
    sweep.add_argument("config", help="JSON or YAML: base (or experiments) + grid [+ store, report, title]")
    sweep.add_argument("--report", help="also write an HTML report here")
    sweep.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import MODULE (registering strategies, models, datasets, ...) here and on every worker; repeatable",
    )
    common(sweep)
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser("report", help="write a standalone HTML report of a store")
    report.add_argument("--out", help="report file (default: <store>/report.html)")
    report.add_argument("--title", default="shrinkviz report")
    report.add_argument(
        "--plotlyjs",
        choices=("inline", "cdn"),
        default="inline",
        help="embed plotly.js (opens offline; default) or load it from its CDN (~4.5 MB smaller)",
    )
    report.add_argument(
        "--claims",
        metavar="SPEC",
        help="a claims spec (TOML): open the report with its verdicts on these runs",
    )
    report.add_argument(
        "--tables", metavar="DIR", help="also write the compact run tables (runs/correct/latency CSV) to DIR"
    )
    common(report, executors=False)
    report.set_defaults(func=cmd_report)

    again = sub.add_parser(
        "remeasure", help="re-time every stored artefact side by side with its baseline, in one sitting"
    )
    again.add_argument(
        "--runtime",
        action="append",
        metavar="NAME",
        help="runtime to time on (repeatable; eager, compiled, onnxruntime, openvino, sparse, fastest); "
        "default: each run's own latency spec",
    )
    again.add_argument("--threads", type=int, metavar="N", help="pinned threads (default: each run's spec)")
    again.add_argument("--rounds", type=int, metavar="N", help="timed rounds (default: each run's spec)")
    common(again, executors=False)
    again.set_defaults(func=cmd_remeasure)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shrinkviz`` console script; returns the exit status (2: bad input or setup,
    1: some runs failed, 0: all good)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed on one line
        return int(exc.code or 0)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # bad input or setup: one line, no traceback
        print(f"shrinkviz: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"shrinkviz {args.command}: interrupted; finished runs are stored and the next run resumes",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
