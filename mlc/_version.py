"""mlc's version (one place: the package, the .mlc header and pyproject agree)."""

__version__ = "0.1.0"
