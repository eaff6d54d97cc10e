"""Classic Core ML models (Model.proto's non-neural types) and pipelines, lowered to JAX.

One registry (``mlc.classic.registry``) maps each ``Model.Type`` oneof name to a builder in
``mlc.classic.models``; ``mlc.classic.frontend`` turns a spec into an ``Executable``.
"""
