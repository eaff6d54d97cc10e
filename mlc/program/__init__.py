"""The values a front end returns: ``Program`` (lowered, frozen), ``Interface``, ``PipelineStage``,
``Summary`` (described, not lowered); ``build`` picks the front end for a spec."""
