"""The front ends, one per Core ML model family (``mil``: ML Programs, ``neuralnetwork``,
``classic``): each turns a spec into a ``Program`` with a node table run by
``mlc.runtime.interpreter``; ``registry`` is the one table class they share."""
