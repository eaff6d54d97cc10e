"""What every model reader returns (``LoadedSpec``), the rule every path in a model follows
(``inside``) and the newest specification version mlc reads (``check_specification_version``).
``mlc.io.spec`` re-exports them; readers that ``mlc.io.spec`` itself calls (``mlc.io.compiled``)
import them from here, so no import cycle runs through ``spec``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from mlc._errors import MLCIOError, MLCUnsupportedError

MAX_SPECIFICATION_VERSION = 10  # Core ML 9 (iOS 26, macOS 26): coremltools' _SPECIFICATION_VERSION_IOS_26


@dataclasses.dataclass
class LoadedSpec:
    """A parsed ``Model`` proto and where its files live."""

    spec: Any
    path: str | None  # what the user gave, for messages
    model_dir: str | None  # folder against which ``@model_path`` resolves
    # where each ML Program operation was written, "file:line:column" by (function, operation
    # name), for a program read from text (a compiled model's model.mil); None otherwise
    sources: dict[tuple[str, str], str] | None = None

    @property
    def name(self) -> str:
        return self.path or "<in-memory model>"


def inside(root: str, relative: str, what: str) -> str:
    """Join ``relative`` to ``root`` and refuse any result that escapes ``root`` (symlinks resolved)."""
    if "\x00" in relative:
        raise MLCIOError(f"{what}: path {relative!r} holds a NUL character")
    if os.path.isabs(relative):
        raise MLCIOError(f"{what}: absolute path {relative!r} is not allowed inside a package")
    try:
        root_real = os.path.realpath(root)
        target = os.path.realpath(os.path.join(root_real, relative))
    except ValueError as e:  # a lone surrogate (from a JSON escape) cannot name a file
        raise MLCIOError(f"{what}: path {relative!r} cannot name a file ({e})") from e
    if os.path.commonpath([root_real, target]) != root_real:
        raise MLCIOError(f"{what}: path {relative!r} leaves the package {root!r} (it resolves to {target!r})")
    return target


def check_specification_version(spec, where: str) -> None:
    """Refuse a ``specificationVersion`` newer than any Core ML release mlc knows, as Core ML
    refuses a model made for a newer OS: its fields may mean things mlc cannot know."""
    version = int(spec.specificationVersion)
    if version > MAX_SPECIFICATION_VERSION:
        raise MLCUnsupportedError(
            f"{where}: specificationVersion {version} is newer than any Core ML specification mlc knows "
            f"(the newest is {MAX_SPECIFICATION_VERSION}, Core ML 9 / iOS 26)"
        )
