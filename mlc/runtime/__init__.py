"""Running programs: the ``Runner``, the one node interpreter, weight-only hoisting, tensor size
limits, run-time checks, the fp16 precision policy, the observer and the compilation cache."""
