"""Reading Core ML files: ``.mlmodel`` protobufs, ``.mlpackage`` folders, MIL weight blobs."""

from mlc.io.blob import BlobFile
from mlc.io.spec import LoadedSpec, load_spec

__all__ = ["BlobFile", "LoadedSpec", "load_spec"]
