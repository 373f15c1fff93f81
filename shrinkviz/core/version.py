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

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True, timeout=10)
        done.check_returncode()
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+changes" if dirty else "")
