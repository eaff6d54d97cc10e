"""What the convolution kernel tests share (``tests/test_depthwise.py``, ``test_patches.py``,
``test_winograd.py``): torch's convolution in float64 as the reference, a comparison relative
to the largest output, and the algorithm ``mlc.kernels.convolution`` picks for a shape."""

from __future__ import annotations

import numpy as np

TOL = dict(rtol=1e-5, atol=1e-5)  # tests/mil/test_conv.py's tolerance for float32 convolutions


def torch_conv(x, w, *, strides=None, padding=None, dilations=None, groups=1) -> np.ndarray:
    """Cross-correlation of ``x (N, C, *S)`` with ``w (O, C / groups, *K)`` by torch in float64;
    ``padding`` a (low, high) pair per spatial dimension, negative crops (F.pad's convention)."""
    import torch
    import torch.nn.functional as F

    spatial = x.ndim - 2
    padding = padding or [(0, 0)] * spatial
    flat = [p for lo_hi in reversed(padding) for p in lo_hi]  # F.pad: last dimension first
    xp = F.pad(torch.from_numpy(x.astype(np.float64)), flat)
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    return conv(xp, torch.from_numpy(w.astype(np.float64)), stride=strides or 1, dilation=dilations or 1, groups=groups).numpy()


def assert_close(actual, expected, tol=TOL) -> None:
    """Relative to the largest output: ``|a - e| <= atol + rtol |e|`` with both scaled by max |e|."""
    scale = float(np.max(np.abs(expected))) or 1.0
    np.testing.assert_allclose(np.asarray(actual, np.float64) / scale, expected / scale, **tol)


def pick(n, c_in, c_out, size, *, kernel=(3, 3), strides=(1, 1), dilations=(1, 1), groups=1, dtype=np.float32, padding=None) -> str:
    """``mlc.kernels.convolution.algorithm`` for a square ``size x size`` input of ``n`` images;
    ``padding`` defaults to "same" for the kernel."""
    import jax

    from mlc.kernels import convolution

    padding = padding if padding is not None else [((k - 1) // 2, k // 2) for k in kernel]
    x = jax.ShapeDtypeStruct((n, c_in, size, size), dtype)
    w = jax.ShapeDtypeStruct((c_out, c_in // groups, *kernel), dtype)
    return convolution.algorithm(x, w, strides=strides, padding=padding, dilations=dilations, groups=groups)
