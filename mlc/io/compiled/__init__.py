"""Compiled Core ML models: ``.mlmodelc`` folders, as Xcode's ``coremlc`` writes them.

* ``folder.py``: ``load_compiled(path) -> LoadedSpec`` (what ``mlc.io.spec.load_spec`` calls for
  a compiled folder) and ``is_compiled_folder``; it dispatches on what the folder holds.
* ``mil_text.py``: text MIL (``model.mil``) -> the ``MIL.proto`` ``Program``.
* ``coremldata.py``: ``coremldata.bin`` (header + protobuf) and ``metadata.json``.

``mlc.io.spec`` imports these modules, so none of them imports ``mlc.io.spec``: ``LoadedSpec``
and ``inside`` come from ``mlc.io.loaded``. This package's ``__init__`` imports nothing.
"""
