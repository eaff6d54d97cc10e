"""``mlc serve``: Core ML models behind the Open Inference Protocol (KServe v2) over HTTP/REST
and gRPC, with dynamic batching (``docs/architecture.md`` has the map of this package).

    from mlc.serve import ServeConfig, serve
    serve(ServeConfig("models/", port=8000, grpc_port=8001))
"""

from mlc.serve.server import ServeConfig, serve, serve_async

__all__ = ["ServeConfig", "serve", "serve_async"]
