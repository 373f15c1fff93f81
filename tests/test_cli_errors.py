"""Every CLI mistake: exit status 2, one line on stderr (``shrinkviz: error: ...``) naming the fix."""

from __future__ import annotations

import pytest

from shrinkviz.cli import main

GOOD = "base: {model: tiny_mlp, data: {name: digits, train: 64}, latency: {runtimes: []}}\n"

CASES = {
    "workers 0": (["--workers", "0"], GOOD, "argument --workers: 0 workers: give N >= 1"),
    "workers word": (["--workers", "two"], GOOD, "'two' is not a whole number; give N >= 1"),
    "option typo": (["--wrokers", "2"], GOOD, "unknown option '--wrokers'; did you mean '--workers'?"),
    "scheduler scheme": (["--scheduler", "host:8786"], GOOD, "expected an address like tcp://host:8786"),
    "dashboard alone": (["--dashboard"], GOOD, "--dashboard and --tls-* apply to Dask: add --workers N"),
    "dashboard remote": (
        ["--dashboard", "--scheduler", "tcp://h:1"],
        GOOD,
        "--dashboard serves a local cluster's dashboard: use --workers N, or drop --dashboard",
    ),
    "tls without ca": (["--workers", "1", "--tls-cert", "x.pem"], GOOD, "TLS needs at least --tls-ca-file"),
    "tls missing file": (
        ["--workers", "1", "--tls-ca-file", "nope.pem", "--tls-cert", "nope.pem"],
        GOOD,
        "TLS CA file nope.pem not found; pass existing PEM files",
    ),
    "model typo": ([], GOOD.replace("tiny_mlp", "tiny_mpl"), "did you mean 'tiny_mlp'"),
    "dataset typo": (
        [],
        GOOD.replace("digits", "digts"),
        "Experiment.data.name='digts': did you mean 'digits'?",
    ),
    "strategy typo": (
        [],
        GOOD + "grid: {strategy: [randon], compression: [2]}\n",
        "Experiment.prune.strategy='randon': did you mean 'random'?",
    ),
    "preset typo": (
        [],
        GOOD.replace("latency", "finetune: {preset: shrinkbnch}, latency"),
        "did you mean 'shrinkbench'",
    ),
    "runtime typo": (
        [],
        GOOD.replace("[]", "[eagre]"),
        "Experiment.latency.runtimes='eagre': did you mean 'eager'?",
    ),
    "section key typo": (
        [],
        GOOD.replace("train:", "trian:"),
        "did you mean 'train'? valid fields: name, train, val, test",
    ),
    "grid key typo": (
        [],
        GOOD + "grid: {sede: [0]}\n",
        "Experiment has no field 'sede'; did you mean 'seed'?",
    ),
    "dotted grid key": ([], GOOD + "grid: {prune.ratio: [2]}\n", "valid: prune.strategy, prune.compression"),
    "top key typo": ([], GOOD + "gird: {}\n", "unknown key(s) ['gird']; did you mean 'grid'?"),
    "security key typo": (
        ["--workers", "1"],
        GOOD + "security: {tls_crt: a}\n",
        "unknown security key 'tls_crt'",
    ),
    "infeasible": (
        [],
        GOOD + "grid: {strategy: [random], compression: [1000000]}\n",
        "compression=1e+06 for tiny_mlp on digits: max reachable is x",
    ),
    "model cannot take data": (
        [],
        GOOD.replace("tiny_mlp", "mnistnet"),
        "model 'mnistnet' cannot take digits's",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_sweep_mistakes_are_one_line_errors(tmp_path, capsys, monkeypatch, case):
    args, text, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweep.yaml").write_text(text)
    assert main(["sweep", "sweep.yaml", "--store", "results", "--quiet", *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("shrinkviz: error: ") and captured.err.count("\n") == 1
    assert expected in captured.err
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("sweep.txt", GOOD.encode(), "unknown format '.txt'; name it .yaml, .yml or .json"),
        (
            "sweep.yaml",
            bytes(range(256)),
            "is a binary file, not a YAML (.yaml/.yml) or JSON (.json) sweep config",
        ),
        ("sweep.yaml", b"", "is empty; expected a YAML (.yaml/.yml) or JSON (.json) sweep config"),
        (
            "sweep.json",
            GOOD.encode(),
            "not valid JSON at line 1 column 1 (Expecting value); it looks like YAML",
        ),
        ("sweep.yaml", (GOOD + "title: [x\n").encode(), "not valid YAML at line"),
        ("sweep.yaml", b"- base\n", "a sweep config is a mapping with keys base"),
    ],
)
def test_bad_config_files_name_the_file_and_format(tmp_path, capsys, name, content, expected):
    (tmp_path / name).write_bytes(content)
    assert main(["sweep", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"shrinkviz: error: config {tmp_path / name}") and expected in err
    assert err.count("\n") == 1


def test_missing_config_and_usage_mistakes(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert f"config {tmp_path / 'nope.yaml'} not found" in capsys.readouterr().err
    assert main(["swep", "x.yaml"]) == 2
    assert (
        "unknown command 'swep'; did you mean 'sweep'? valid: demo, remeasure, report, sweep"
        in capsys.readouterr().err
    )
    assert main(["report", "--plotlyjs", "cdm"]) == 2
    assert "unknown --plotlyjs value 'cdm'; did you mean 'cdn'?" in capsys.readouterr().err
    assert main(["report", "--store", str(tmp_path / "x.json")]) == 2
    assert "does not exist; pass the folder a sweep wrote" in capsys.readouterr().err
