"""What is built on a loaded Model: ahead-of-time ``.mlc`` files, the batch scorer, cost reports,
and coremltools' ``MLModel.predict`` routed to mlc."""
