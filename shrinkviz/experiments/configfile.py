"""Sweep config files (YAML or JSON): read, checked and made absolute before anything runs.

A config holds a base experiment (or a list ``experiments``), a grid, and optionally ``store``, ``report``,
``title``, a Dask TLS ``security`` block and ``plugins`` (modules imported here and on every worker);
relative paths are taken from the config file's folder. Every mistake is a ``ValueError`` naming the file
and what was expected.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "sweep.yml"
    >>> _ = p.write_text("base: {model: tiny_mlp}\\ngrid: {seed: [0, 1]}\\n")
    >>> load_config(p)["grid"]
    {'seed': [0, 1]}
    >>> _ = p.write_text("bsae: {}\\n")
    >>> try:
    ...     load_config(p)
    ... except ValueError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    unknown key(s) ['bsae']; did you mean 'base'? valid keys: base, experiments, grid, store, report, title, security, plugins
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shrinkviz.core.registry import did_you_mean

CONFIG_KEYS = ("base", "experiments", "grid", "store", "report", "title", "security", "plugins")
CONFIG_FORMATS = (".yaml", ".yml", ".json")
SECURITY_KEYS = ("tls_ca_file", "tls_cert", "tls_key")


def _read_config_text(path: Path) -> str:
    """The text of a config file, or a ValueError naming the file and what was expected."""
    expected = "a YAML (.yaml/.yml) or JSON (.json) sweep config"
    if path.suffix.lower() not in CONFIG_FORMATS:
        raise ValueError(
            f"config {path}: unknown format {path.suffix or '(no extension)'!r}; name it .yaml, .yml or .json "
            f"({expected})"
        )
    if not path.exists():
        raise ValueError(f"config {path} not found; pass the path of {expected}")
    if path.is_dir():
        raise ValueError(f"config {path} is a directory; pass the path of {expected}")
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError(
            f"config {path} is empty; expected {expected} with keys {', '.join(CONFIG_KEYS[:3])}"
        )
    try:
        if b"\0" in raw:
            raise UnicodeDecodeError("utf-8", raw, raw.index(b"\0"), raw.index(b"\0") + 1, "NUL byte")
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"config {path} is a binary file, not {expected}; pass a UTF-8 text file") from None


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sweep config from JSON or YAML, with unknown top-level keys rejected and paths made absolute.

    Raises:
        ValueError: naming the file and the expected format (unknown extension, missing, empty, binary,
            not parsable, not a mapping, unknown keys with a did-you-mean).
    """
    path = Path(path)
    text = _read_config_text(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1} column {where.column + 1}" if where else ""
            raise ValueError(
                f"config {path}: not valid YAML{at} ({getattr(exc, 'problem', None) or 'syntax error'})"
            ) from exc
    else:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            hint = "; it looks like YAML: name it .yaml" if _looks_like_yaml(text) else ""
            raise ValueError(
                f"config {path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}){hint}"
            ) from exc
    if not isinstance(config, dict):
        raise ValueError(
            f"config {path}: a sweep config is a mapping with keys {', '.join(CONFIG_KEYS)}, "
            f"got {type(config).__name__}; write e.g. `base: {{model: tiny_mlp}}` and `grid: {{seed: [0, 1]}}`"
        )
    unknown = [k for k in config if k not in CONFIG_KEYS]
    if unknown:
        hint = did_you_mean(unknown[0], CONFIG_KEYS)
        raise ValueError(
            f"config {path}: unknown key(s) {unknown};{hint} valid keys: {', '.join(CONFIG_KEYS)}"
        )
    if ("base" in config) == ("experiments" in config):
        raise ValueError(f"{path}: give exactly one of 'base' (one experiment) or 'experiments' (a list)")
    for key in ("store", "report"):
        if config.get(key) is not None:
            config[key] = str((path.parent / str(config[key])).resolve())
    plugins = config.get("plugins")
    if plugins is not None and (
        not isinstance(plugins, list) or not all(isinstance(p, str) and p.strip() for p in plugins)
    ):
        raise ValueError(
            f"config {path}: 'plugins' must be a list of importable module names, e.g. `plugins: [my_methods]`"
        )
    security = config.get("security")
    if security is not None and not isinstance(security, dict):
        raise ValueError(
            f"config {path}: 'security' must map {', '.join(SECURITY_KEYS)} to PEM file paths, e.g. "
            "`security: {tls_ca_file: ca.pem, tls_cert: cert.pem, tls_key: key.pem}`"
        )
    for key, value in (security or {}).items():
        if isinstance(value, str):
            security[key] = str((path.parent / value).resolve())
    return config


def _looks_like_yaml(text: str) -> bool:
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    return ":" in first and not first.startswith(("{", "["))
