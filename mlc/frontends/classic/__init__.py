"""Classic Core ML models (Model.proto's non-neural types) and pipelines, lowered to JAX.

One registry (``mlc.frontends.classic.registry``) maps each ``Model.Type`` oneof name to a builder in
``mlc.frontends.classic.models``; ``mlc.frontends.classic.frontend`` turns a spec into a ``Program``.
"""
