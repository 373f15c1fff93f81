"""The package version, in one place (the facade and every result row read it)."""

__version__ = "0.1.0"


def commit() -> str:
    """The git commit of the source checkout shrinkviz runs from (``'<short hash>'``, with ``'+changes'``
    when tracked files differ from it), or ``''`` for an installed package or where git is missing."""
    import subprocess
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / ".git").exists():
        return ""
    try:
        head = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+changes" if dirty else "")
