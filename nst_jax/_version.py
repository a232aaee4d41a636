"""The package version (one place; the checkpoint and every output record it)."""

__version__ = "0.2.0"
