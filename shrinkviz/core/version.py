"""The package version, in one place (the facade and every result row read it)."""

__version__ = "0.1.0"
