"""One registry class for the front ends' tables of named implementations: MIL ops
(``mlc.frontends.mil.registry``), NeuralNetwork layers (``mlc.frontends.neuralnetwork.registry``),
classic model types (``mlc.frontends.classic.registry``) and the app's custom-layer bindings
(``mlc.frontends.neuralnetwork.custom``).

A ``Registry`` maps names to entries. Entries are registered by the modules that define them
(their decorators call ``register``), and those modules are imported lazily: the ``loader``
given to the registry runs once, on the first lookup (``find``, ``require``, ``names``, ``in``,
...), never on ``register``. A name registered twice is refused unless ``replace=True``;
``require`` turns a missing name into the ``MLCUnsupportedError`` that names it, where it was
met, and what is supported.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Iterator, TypeVar

from mlc._errors import MLCUnsupportedError

T = TypeVar("T")


class DuplicateEntryError(ValueError, RuntimeError):
    """A name registered twice: a bug in mlc (or in an app's registrations), raised at import.
    A ValueError and a RuntimeError, as the separate registries it replaces raised one or the
    other."""


class Registry(Generic[T]):
    """Named entries of one kind, ``what`` (``"MIL op"``, ``"NeuralNetwork layer type"``), which
    error messages name; ``loader()`` imports the modules that register them (None: entries are
    registered explicitly, as custom-layer bindings are)."""

    def __init__(self, what: str, loader: Callable[[], object] | None = None):
        self.what = what
        self._entries: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None
        self._loading = False
        self._lock = threading.RLock()

    # -- registering -----------------------------------------------------------------------------
    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under ``name`` and return it; a name already present is refused
        (``DuplicateEntryError``) unless ``replace``."""
        if not replace and name in self._entries:
            raise DuplicateEntryError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def setdefault(self, name: str, default: T) -> T:
        """The entry of ``name``, registering ``default`` first when there is none (for entries
        that collect several definitions, such as a MIL op's per-opset lowerings). Does not load."""
        return self._entries.setdefault(name, default)

    def unregister(self, name: str) -> T | None:
        """Remove ``name``; its entry, or None when it had none."""
        return self._entries.pop(name, None)

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> None:
        """Run the loader, once. A lookup made while the loader's modules import, in the same
        thread, sees the entries registered so far instead of loading again; other threads wait
        for the loader to finish. A loader that fails is not run again (its error is raised once,
        from the lookup that ran it)."""
        if self._loaded:
            return
        with self._lock:  # re-entrant: the loading thread passes, and finds _loading set
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                self._loader()
            finally:
                self._loading = False
                self._loaded = True

    # -- looking up ------------------------------------------------------------------------------
    def find(self, name: str) -> T | None:
        """The entry of ``name``, or None."""
        self.load()
        return self._entries.get(name)

    def require(self, name: str, *, where: str | None = None, detail: str | None = None, hint: str | None = None,
                list_supported: bool = True) -> T:
        """The entry of ``name``; ``MLCUnsupportedError`` (see ``unsupported``) when there is none."""
        found = self.find(name)
        if found is None:
            raise self.unsupported(name, where=where, detail=detail, hint=hint, list_supported=list_supported)
        return found

    def unsupported(self, name: str, *, where: str | None = None, detail: str | None = None, hint: str | None = None,
                    list_supported: bool = True) -> MLCUnsupportedError:
        """The error for a ``name`` with no entry: ``"{where}: {what} {name!r} ({detail}) is not
        supported by mlc yet; {hint}. Supported: {names}"``, each optional part left out when not
        given (the supported names with ``list_supported=False``)."""
        message = f"{self.what} {name!r}"
        if detail:
            message += f" ({detail})"
        message += " is not supported by mlc yet"
        if where:
            message = f"{where}: {message}"
        if hint:
            message += f"; {hint}"
        if list_supported:
            message += f". Supported: {', '.join(self.names()) or 'none'}"
        return MLCUnsupportedError(message)

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self.load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """Every ``(name, entry)``, sorted by name."""
        self.load()
        return sorted(self._entries.items(), key=lambda item: item[0])

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.load()
        return len(self._entries)

    def __repr__(self) -> str:
        state = f"{len(self._entries)} entries" if self._loaded else "not loaded"
        return f"Registry({self.what!r}, {state})"
