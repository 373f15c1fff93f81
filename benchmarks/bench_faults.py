"""Fault and bad-input figures, printed as JSON.

1. Faults injected into data, stores and sweeps (kind, count), with the runs lost and the runs recomputed
   after each (a lost run is a record stored before the fault that no longer reads back).
2. Bad inputs, each actually tried through the API or the CLI (``shrinkviz.cli.main``): how many were
   refused with a one-line message that names a fix (a did-you-mean, the valid values, or what to do).
3. Preflight time of a 100-point grid of small models (a warm and a cold model cache).

Runs: TinyMLP on scikit-learn digits subsets, one baseline epoch, no latency. Read-only and full-disk
faults mount a tmpfs and need root; without it they are reported as skipped.

Usage:
    python benchmarks/bench_faults.py [--verbose]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("SHRINKVIZ_CACHE", tempfile.mkdtemp(prefix="bench_faults_cache_"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from shrinkviz.cli import main as cli  # noqa: E402
from shrinkviz.data import formats, load_dataset, sources, verify  # noqa: E402
from shrinkviz.experiments import preflight as pf  # noqa: E402
from shrinkviz.experiments.executors import DaskExecutor, make_executor, tls_security  # noqa: E402
from shrinkviz.experiments.experiment import Experiment  # noqa: E402
from shrinkviz.experiments.leases import Leases  # noqa: E402
from shrinkviz.experiments.store import Store  # noqa: E402
from shrinkviz.experiments.sweep import sweep  # noqa: E402
from shrinkviz.models import create_model  # noqa: E402

BASE = Experiment(
    model="tiny_mlp",
    data={"name": "digits", "train": 128, "val": 32, "test": 64},
    baseline={"epochs": 1},
    finetune={"preset": "adam_fast", "epochs": 1},
    latency={"runtimes": []},
)
FIX = re.compile(
    r"did you mean|valid|allowed values|Fix:|must be|expected|pass |use |give |name it|run `|lower it|"
    r"omit |add |needs |Start one|regenerate|delete |reinstall|free space|required|write e\.g\.|e\.g\. `",
    re.IGNORECASE,
)
ROOT = os.geteuid() == 0
TMP = Path(tempfile.mkdtemp(prefix="bench_faults_"))


def _mount(name: str, options: str) -> Path:
    path = TMP / name
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    return path


def _fill(folder: Path) -> None:
    with open(folder / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 4096)


def _message(fn: Callable[[], object]) -> str | None:
    """The error text of ``fn()``: the exception's message, or for the CLI its stderr; None if it passed."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out = fn()
    except Exception as exc:  # noqa: BLE001 - every refusal is what is measured
        return str(exc)
    if isinstance(out, int) and out != 0:  # CLI exit status
        return err.getvalue().rstrip("\n")
    return None


def _with_env(name: str, value: str, fn: Callable[[], object]) -> object:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return fn()
    finally:
        os.environ.pop(name) if old is None else os.environ.__setitem__(name, old)


# -- bad inputs --------------------------------------------------------------------------------------
def _config(name: str, text: str | bytes) -> str:
    path = TMP / "configs" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


GOOD = "base: {model: tiny_mlp, data: {name: digits, train: 64}, latency: {runtimes: []}}\n"


def bad_inputs() -> dict[str, Callable[[], object]]:
    file_store = TMP / "store_file"
    file_store.write_text("x")
    (TMP / "empty_store").mkdir()
    (TMP / "configs").mkdir(exist_ok=True)
    (TMP / "configs" / "dir.yaml").mkdir()
    ok = _config("ok.yaml", GOOD)
    E = Experiment  # noqa: N806
    cases: dict[str, Callable[[], object]] = {
        "api: model typo": lambda: E(model="tiny_mpl"),
        "api: model typo resnet2O": lambda: E(model="resnet2O"),
        "api: dataset typo": lambda: E(data="digts"),
        "api: dataset fashion-mnist": lambda: E(data="fashion-mnist"),
        "api: dataset cifar-10": lambda: E(data="cifar-10"),
        "api: strategy typo": lambda: BASE.replace(strategy="globl_weight", compression=2),
        "api: strategy randm": lambda: BASE.replace(strategy="randm", compression=2),
        "api: finetune preset typo": lambda: BASE.replace(finetune_preset="adam_fats"),
        "api: baseline recipe typo": lambda: BASE.replace(recipe="defualt"),
        "api: quant method typo": lambda: BASE.replace(quantization="qta"),
        "api: runtime typo": lambda: BASE.replace(**{"latency.runtimes": ["eagr"]}),
        "api: runtime onnx": lambda: BASE.replace(**{"latency.runtimes": ["onnx"]}),
        "api: distill student typo": lambda: BASE.replace(**{"distill.student": "tiny_mpl"}),
        "api: top-level field typo": lambda: E.from_dict({"modle": "tiny_mlp"}),
        "api: prune field typo": lambda: E.from_dict({"prune": {"compresion": 2}}),
        "api: data field typo": lambda: E.from_dict({"data": {"nmae": "digits"}}),
        "api: latency field typo": lambda: E.from_dict({"latency": {"thread": 1}}),
        "api: grid alias typo": lambda: E.resolve_path("compresion"),
        "api: dotted path unknown": lambda: E.resolve_path("prune.sparsity"),
        "api: dotted path typo": lambda: E.resolve_path("latency.runtime"),
        "api: compression < 1": lambda: BASE.replace(strategy="random", compression=0.5),
        "api: compression nan": lambda: BASE.replace(strategy="random", compression=float("nan")),
        "api: compression a string": lambda: BASE.replace(strategy="random", compression="eight"),
        "api: compression without strategy": lambda: BASE.replace(compression=4),
        "api: seed negative": lambda: BASE.replace(seed=-1),
        "api: seed fractional": lambda: BASE.replace(seed=1.5),
        "api: data train 0": lambda: BASE.replace(**{"data.train": 0}),
        "api: finetune epochs 0": lambda: BASE.replace(finetune_epochs=0),
        "api: distill alpha 2": lambda: BASE.replace(alpha=2),
        "api: distill temperature 0": lambda: BASE.replace(temperature=0),
        "api: pipeline order PXD": lambda: BASE.replace(order="PXD"),
        "api: pipeline epochs count": lambda: BASE.replace(
            strategy="random", compression=2, quantization="qat", order="PQ", stage_epochs=[1]
        ),
        "api: latency threads 0": lambda: BASE.replace(**{"latency.threads": 0}),
        "api: latency batch -3": lambda: BASE.replace(**{"latency.batch": -3}),
        "api: latency runtime twice": lambda: BASE.replace(**{"latency.runtimes": ["eager", "eager"]}),
        "api: sweep grid empty": lambda: sweep(BASE, store=TMP / "s0", progress=False, seed=[]),
        "api: sweep grid key typo": lambda: sweep(BASE, store=TMP / "s0", progress=False, stratgy=["random"]),
        "api: sweep grid alias clash": lambda: sweep(
            BASE, store=TMP / "s0", progress=False, strategy=["random"], **{"prune.strategy": ["random"]}
        ),
        "api: sweep infeasible compression": lambda: sweep(
            BASE, store=TMP / "s0", progress=False, strategy=["random"], compression=[2, 1e9]
        ),
        "api: sweep model cannot take data": lambda: sweep(BASE.replace(model="mnistnet"), store=TMP / "s0"),
        "api: sweep store path a file": lambda: sweep(BASE, store=file_store, progress=False),
        "api: executor typo": lambda: make_executor("daks"),
        "api: dask n_workers 0": lambda: DaskExecutor(n_workers=0),
        "api: dask threads 0": lambda: DaskExecutor(threads_per_worker=0),
        "api: dask empty address": lambda: DaskExecutor(address=" "),
        "api: dask timeout 0": lambda: DaskExecutor(connect_timeout=0),
        "api: dask dashboard not bool": lambda: DaskExecutor(dashboard="yes"),
        "api: dask unreachable": lambda: DaskExecutor(address="tcp://127.0.0.1:9", connect_timeout=1).start(),
        "api: tls files missing": lambda: tls_security(str(TMP / "ca.pem"), str(TMP / "c.pem")),
        "api: digest algo": lambda: verify.Digest("sha1", "0" * 40),
        "api: digest width": lambda: verify.Digest("sha256", "abc"),
        "api: digests registered twice": lambda: verify.register_digests("mnist", {}),
        "api: lease ttl 0": lambda: Leases(TMP, ttl=0),
        "api: invalid run id": lambda: Store(TMP / "s1").file("bad id!"),
        "api: load_dataset unknown": lambda: load_dataset("imagenet"),
        "api: load_dataset val_fraction": lambda: load_dataset("digits", val_fraction=1.5),
        "api: imagefolder without path": lambda: load_dataset("imagefolder"),
        "api: create_model unknown": lambda: create_model("resnet"),
        "cli: --workers 0": lambda: cli(["sweep", ok, "--workers", "0"]),
        "cli: --workers -2": lambda: cli(["sweep", ok, "--workers", "-2"]),
        "cli: --workers two": lambda: cli(["sweep", ok, "--workers", "two"]),
        "cli: command typo": lambda: cli(["swep", ok]),
        "cli: option typo": lambda: cli(["sweep", ok, "--wrokers", "2"]),
        "cli: config missing": lambda: cli(["sweep"]),
        "cli: --profile typo": lambda: cli(["demo", "--profile", "smok"]),
        "cli: --plotlyjs typo": lambda: cli(["report", "--plotlyjs", "cdm"]),
        "cli: report missing store": lambda: cli(["report", "--store", str(TMP / "nowhere")]),
        "cli: report empty store": lambda: cli(["report", "--store", str(TMP / "empty_store")]),
        "cli: report store a file": lambda: cli(["report", "--store", str(file_store)]),
        "cli: config not found": lambda: cli(["sweep", str(TMP / "nope.yaml")]),
        "cli: config .txt": lambda: cli(["sweep", _config("sweep.txt", GOOD)]),
        "cli: config binary": lambda: cli(["sweep", _config("bin.yaml", bytes(range(256)))]),
        "cli: config empty": lambda: cli(["sweep", _config("empty.yaml", "")]),
        "cli: config a directory": lambda: cli(["sweep", str(TMP / "configs" / "dir.yaml")]),
        "cli: YAML named .json": lambda: cli(["sweep", _config("yaml.json", GOOD)]),
        "cli: bad YAML": lambda: cli(["sweep", _config("bad.yaml", GOOD + "title: [unclosed\n")]),
        "cli: bad JSON": lambda: cli(["sweep", _config("bad.json", '{"base": {"model": "tiny_mlp",}}')]),
        "cli: config a list": lambda: cli(["sweep", _config("list.yaml", "- base\n")]),
        "cli: top key typo": lambda: cli(["sweep", _config("key.yaml", GOOD + "gird: {}\n")]),
        "cli: base and experiments": lambda: cli(["sweep", _config("both.yaml", GOOD + "experiments: []\n")]),
        "cli: grid not a mapping": lambda: cli(["sweep", _config("grid.yaml", GOOD + "grid: [1]\n")]),
        "cli: experiments not a list": lambda: cli(["sweep", _config("exps.yaml", "experiments: {a: 1}\n")]),
        "cli: model typo": lambda: cli(["sweep", _config("m.yaml", GOOD.replace("tiny_mlp", "tiny_mpl"))]),
        "cli: dataset typo": lambda: cli(["sweep", _config("d.yaml", GOOD.replace("digits", "digit"))]),
        "cli: strategy typo": lambda: cli(
            ["sweep", _config("s.yaml", GOOD + "grid: {strategy: [randon], compression: [2]}\n")]
        ),
        "cli: preset typo": lambda: cli(
            ["sweep", _config("p.yaml", GOOD.replace("latency", "finetune: {preset: shrinkbnch}, latency"))]
        ),
        "cli: runtime typo": lambda: cli(["sweep", _config("r.yaml", GOOD.replace("[]", "[eagre]"))]),
        "cli: section field typo": lambda: cli(
            ["sweep", _config("f.yaml", GOOD.replace("train:", "trian:"))]
        ),
        "cli: grid key typo": lambda: cli(["sweep", _config("g.yaml", GOOD + "grid: {sede: [0]}\n")]),
        "cli: compression 0.5": lambda: cli(
            ["sweep", _config("c.yaml", GOOD + "grid: {strategy: [random], compression: [0.5]}\n")]
        ),
        "cli: infeasible compression": lambda: cli(
            ["sweep", _config("i.yaml", GOOD + "grid: {strategy: [random], compression: [1000000]}\n")]
        ),
        "cli: model cannot take data": lambda: cli(
            ["sweep", _config("mn.yaml", GOOD.replace("tiny_mlp", "mnistnet"))]
        ),
        "cli: --scheduler without scheme": lambda: cli(["sweep", ok, "--scheduler", "localhost:8786"]),
        "cli: --scheduler unreachable": lambda: cli(["sweep", ok, "--scheduler", "tcp://127.0.0.1:9"]),
        "cli: --dashboard without dask": lambda: cli(["sweep", ok, "--dashboard"]),
        "cli: --dashboard with --scheduler": lambda: cli(
            ["sweep", ok, "--dashboard", "--scheduler", "tcp://h:1"]
        ),
        "cli: dotted grid key unknown": lambda: cli(
            ["sweep", _config("dg.yaml", GOOD + "grid: {prune.ratio: [2]}\n")]
        ),
        "cli: report --store a run file": lambda: cli(["report", "--store", str(TMP / "nowhere" / "x.json")]),
        "cli: env profile typo": lambda: _with_env("SHRINKVIZ_PROFILE", "smoek", lambda: cli(["demo"])),
        "cli: --tls-cert without CA": lambda: cli(["sweep", ok, "--workers", "1", "--tls-cert", ok]),
        "cli: --tls-ca-file missing": lambda: cli(
            ["sweep", ok, "--workers", "1", "--tls-ca-file", str(TMP / "x.pem"), "--tls-cert", ok]
        ),
        "cli: security key typo": lambda: cli(
            ["sweep", _config("sec.yaml", GOOD + "security: {tls_crt: a.pem}\n"), "--workers", "1"]
        ),
        "cli: security not a mapping": lambda: cli(["sweep", _config("sec2.yaml", GOOD + "security: [1]\n")]),
        "cli: config store a file": lambda: cli(
            ["sweep", _config("st.yaml", GOOD + f"store: {file_store}\n"), "--quiet"]
        ),
    }
    if ROOT:
        ro, full = _mount("ro", "ro,size=1M"), _mount("full", "size=64k")
        _fill(full)
        cases["api: sweep read-only store"] = lambda: sweep(BASE, store=ro, progress=False)
        cases["api: sweep store on a full disk"] = lambda: sweep(BASE, store=full, progress=False)
        cases["cli: read-only --store"] = lambda: cli(["sweep", ok, "--store", str(ro), "--quiet"])
    return cases


# -- faults ------------------------------------------------------------------------------------------
def _ok_ids(store: Store) -> set[str]:
    return {r for r in store.run_ids() if store.has(r)}


def faults() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []

    def row(kind: str, count: int, refused: bool, lost: int = 0, recomputed: int = 0, note: str = "") -> None:
        rows.append(
            dict(
                kind=kind, count=count, handled=refused, runs_lost=lost, runs_recomputed=recomputed, note=note
            )
        )

    # planted pickles that would run code
    planted = 0
    for i in range(3):
        sentinel = TMP / f"EXECUTED{i}"
        cmd = (os.system, (f"touch {sentinel}",))
        blob = pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=2)
        evil = blob[:-1] + b"c" + b"os\nsystem\n" + pickle.dumps(cmd[1], protocol=2)[2:-1] + b"R0" + b"."
        path = TMP / f"batch{i}"
        path.write_bytes(evil)
        planted += (
            _message(lambda p=path: formats.read_cifar_batch(p, "labels")) is not None
            and not sentinel.exists()
        )
    row(
        "planted CIFAR pickle running os.system",
        3,
        planted == 3,
        note="sentinel files created: 0" if planted == 3 else "",
    )
    # fake datasets under real names
    fake = 0
    for name in ("fashion_mnist", "mnist"):
        folder = sources.dataset_dir(name, TMP / "cache")
        folder.mkdir(parents=True)
        for split, n in (("train", 120), ("t10k", 60)):
            formats.write_idx(
                folder / f"{split}-images-idx3-ubyte.gz", torch.zeros(n, 28, 28, dtype=torch.uint8)
            )
            formats.write_idx(folder / f"{split}-labels-idx1-ubyte.gz", torch.zeros(n, dtype=torch.uint8))
        msg = _message(lambda n=name: load_dataset(n, cache=TMP / "cache", download=False)) or ""
        fake += "train-images-idx3-ubyte.gz: not the official" in msg
    row("fake 120-image dataset under a registry name", 2, fake == 2)
    # store faults with runs already stored
    store = Store(TMP / "store")
    sweep(BASE, store=store, progress=False, seed=[0, 1, 2, 3])
    before = _ok_ids(store)
    for p in list(store.runs_dir.glob("*.json"))[:3]:
        doc = p.read_text()
        edit = re.sub(
            r'("top1":\d\.)(\d)', lambda m: m.group(1) + str((int(m.group(2)) + 1) % 10), doc, count=1
        )
        assert edit != doc and json.loads(edit)  # one digit changed, still valid JSON
        p.write_text(edit)
    fresh = Store(store.path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh.run_ids()  # reads every record
        edited = sum("checksum mismatch" in p for p in fresh.problems)
        again = sweep(BASE, store=fresh, progress=False, seed=[0, 1, 2, 3])
    row("edited record (one value, valid JSON)", 3, edited == 3, len(before - _ok_ids(fresh)), again.ran)
    old = time.time() - 7200
    for i in range(5):
        tmp = store.runs_dir / f".x{i}.json.dead.tmp"
        tmp.write_text("{half")
        os.utime(tmp, (old, old))
    cleaned = Store(store.path).cleaned
    row("stale temp files of killed writers", 5, len(cleaned) == 5, len(before - _ok_ids(Store(store.path))))
    row(
        "store path that is a file",
        1,
        "is a file" in (_message(lambda: sweep(BASE, store=TMP / "store_file")) or ""),
    )
    if ROOT:
        ro = _mount("ro2", "ro,size=1M")
        row(
            "read-only store (tmpfs -o ro)",
            1,
            "not writable" in (_message(lambda: sweep(BASE, store=ro)) or ""),
        )
        full = _mount("full2", "size=64k")
        small = Store(full)
        small.put(Store(store.path).get(next(iter(before))).row)
        _fill(full)
        msg = _message(lambda: small.put(Store(store.path).get(sorted(before)[1]).row)) or ""
        left = sorted(p.name for p in small.runs_dir.iterdir())
        row(
            "full disk on write (tmpfs -o size=64k)",
            1,
            "disk is full" in msg and len(left) == 1,
            1 - len(_ok_ids(small)),
        )
    else:
        row("read-only store / full disk", 0, False, note="skipped: needs root to mount a tmpfs")
    # infeasible grid points
    infeasible = (
        _message(
            lambda: sweep(
                BASE,
                store=TMP / "s2",
                progress=False,
                strategy=["random"],
                compression=[2, 1e9],
                seed=[0, 1, 2],
            )
        )
        or ""
    )
    row(
        "infeasible grid points (compression=1e9)",
        3,
        "(runs: 3)" in infeasible and len(Store(TMP / "s2")) == 0,
    )
    # two concurrent sweeps over one grid
    code = (
        "import json,sys; from bench_faults import BASE; from shrinkviz.experiments.sweep import sweep;"
        "r=sweep(BASE,store=sys.argv[1],progress=False,seed=list(range(6)),poll_s=0.1);print(json.dumps(r.ran_ids))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(TMP / "shared")], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    ran = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    twice = len(set(ran[0]) & set(ran[1]))
    row(
        "two concurrent sweeps, one 6-run grid",
        2,
        twice == 0 and len(set(ran[0]) | set(ran[1])) == 6,
        0,
        twice,
        f"split {len(ran[0])}/{len(ran[1])}",
    )
    return rows


def preflight_speed() -> dict[str, float]:
    grid = [
        BASE.replace(strategy="random", compression=1 + c / 2, seed=s) for c in range(10) for s in range(10)
    ]
    store = Store(TMP / "speed")
    pf._model_info.cache_clear()
    t0 = time.perf_counter()
    pf.preflight(grid, store)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    pf.preflight(grid, store)
    return {
        "preflight_100_points_cold_s": round(cold, 4),
        "preflight_100_points_warm_s": round(time.perf_counter() - t0, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="list every bad input and its message")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        results = []
        for name, fn in bad_inputs().items():
            msg = _message(fn)
            text = (msg or "").removeprefix("shrinkviz: error: ")
            results.append(
                dict(
                    input=name,
                    refused=msg is not None,
                    one_line=msg is not None and "\n" not in msg.strip(),
                    names_fix=bool(FIX.search(text)),
                    message=msg,
                )
            )
        good = [r for r in results if r["refused"] and r["one_line"] and r["names_fix"]]
        report = {
            "faults": faults(),
            "bad_inputs": {
                "tried": len(results),
                "api": sum(r["input"].startswith("api") for r in results),
                "cli": sum(r["input"].startswith("cli") for r in results),
                "one_line_error_naming_a_fix": len(good),
                "not_so": [r for r in results if r not in good],
            },
            **preflight_speed(),
            "root": ROOT,
        }
        if args.verbose:
            report["bad_inputs"]["all"] = results
        print(json.dumps(report, indent=1))
    finally:
        for mount in ("ro", "full", "ro2", "full2"):
            if (TMP / mount).is_dir():
                subprocess.run(["umount", str(TMP / mount)], check=False, capture_output=True)


if __name__ == "__main__":
    main()
