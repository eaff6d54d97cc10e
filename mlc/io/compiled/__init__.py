"""Compiled Core ML models: ``.mlmodelc`` folders, as Xcode's ``coremlc`` writes them.

``coremldata.py`` reads ``coremldata.bin`` and ``metadata.json`` (the description).
"""
