"""Computations shared by the front ends (each op or layer lowering stays in its front end):

* ``convolution``: convolutions on XLA (MIL ``conv``, NeuralNetwork ``convolution``);
* ``channels_last``: pads and pooling of an image's height and width in the channels-last
  layout of the convolutions around them (MIL ``pad`` and pooling, NeuralNetwork ``padding``
  and ``pooling``);
* ``recurrence``: the layout a recurrent layer's scan carries its state in (MIL ``lstm``,
  ``gru``, ``rnn``; NeuralNetwork LSTM, GRU and simple recurrent layers);
* ``resampling``: resize grids, bilinear sampling and crop-and-resize (MIL ``resize_bilinear``,
  ``crop_resize``...; NeuralNetwork ``upsample``, ``resizeBilinear``, ``cropResize``);
* ``nms``: box overlap and greedy non-maximum suppression (MIL ``non_maximum_suppression``,
  the NeuralNetwork ``NonMaximumSuppression`` layer, the classic ``nonMaximumSuppression`` model);
* ``sampling``: seeded and fresh random draws (MIL ``random_*``, NeuralNetwork random layers).
"""
