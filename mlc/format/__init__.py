"""Reading Core ML files: ``.mlmodel`` protobufs, ``.mlpackage`` folders, MIL weight blobs."""

from mlc.format.blob import BlobFile
from mlc.format.spec import LoadedSpec, load_spec

__all__ = ["BlobFile", "LoadedSpec", "load_spec"]
