"""batch_norm, instance_norm, l2_norm, layer_norm, local_response_norm against torch / numpy."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def t(a):
    return torch.from_numpy(a)


@pytest.mark.parametrize("target, shape", [("iOS15", (2, 3, 5)), ("iOS15", (1, 3, 2, 3, 4)), ("iOS17", (2, 3, 4, 5))])
def test_batch_norm(target, shape):
    x = rand(*shape)
    c = shape[1]
    mean, var, gamma, beta = rand(c), np.abs(rand(c)) + 0.1, rand(c), rand(c)
    outs = run_mil(
        lambda x: (
            mb.batch_norm(x=x, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3),
            mb.batch_norm(x=x, mean=mean, variance=var),
        ),
        {"x": x},
        target=target,
    )
    want = F.batch_norm(t(x), t(mean), t(var), t(gamma), t(beta), training=False, eps=1e-3).numpy()
    np.testing.assert_allclose(outs[0], want, **TOL)
    want = F.batch_norm(t(x), t(mean), t(var), training=False, eps=1e-5).numpy()
    np.testing.assert_allclose(outs[1], want, **TOL)


def test_batch_norm_fp16_params_ios17():
    """iOS17 lets the parameters have another dtype than x."""
    x = rand(2, 3, 4)
    mean, var = rand(3).astype(np.float16), (np.abs(rand(3)) + 0.5).astype(np.float16)
    (out,) = run_mil(lambda x: mb.batch_norm(x=x, mean=mean, variance=var), {"x": x}, target="iOS17")
    want = F.batch_norm(t(x), t(mean.astype(np.float32)), t(var.astype(np.float32)), training=False).numpy()
    np.testing.assert_allclose(out, want, **TOL)


@pytest.mark.parametrize("target, shape", [("iOS15", (2, 3, 7)), ("iOS17", (2, 3, 4, 5))])
def test_instance_norm(target, shape):
    x = rand(*shape) * 3 + 1
    gamma, beta = rand(shape[1]), rand(shape[1])
    outs = run_mil(
        lambda x: (
            mb.instance_norm(x=x, gamma=gamma, beta=beta, epsilon=1e-3),
            mb.instance_norm(x=x),
        ),
        {"x": x},
        target=target,
    )
    np.testing.assert_allclose(outs[0], F.instance_norm(t(x), weight=t(gamma), bias=t(beta), eps=1e-3).numpy(), **TOL)
    np.testing.assert_allclose(outs[1], F.instance_norm(t(x), eps=1e-5).numpy(), **TOL)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_l2_norm(target):
    """The last three axes are normalized together; leading axes are batch."""
    xs = {"a": rand(3, 4, 5), "b": rand(2, 3, 4, 5), "c": rand(2, 2, 3, 4, 5)}
    outs = run_mil(
        lambda a, b, c: tuple(f(x) for x in (a, b, c) for f in (lambda x: mb.l2_norm(x=x), lambda x: mb.l2_norm(x=x, epsilon=0.5))),
        xs,
        target=target,
    )
    wants = []
    for x in xs.values():
        flat = x.reshape(int(np.prod(x.shape[:-3])), -1)
        for eps in (1e-6, 0.5):
            wants.append((flat / np.sqrt(np.sum(flat**2, axis=1, keepdims=True) + eps)).reshape(x.shape))
    for out, want in zip(outs, wants):
        np.testing.assert_allclose(out, want, **TOL)


@pytest.mark.parametrize("target", ["iOS15", "iOS17"])
def test_layer_norm(target):
    x = rand(2, 3, 4, 5) * 2 + 0.5
    g2, b2 = rand(4, 5), rand(4, 5)
    g1, b1 = rand(5), rand(5)
    outs = run_mil(
        lambda x: (
            mb.layer_norm(x=x, axes=[-2, -1], gamma=g2, beta=b2, epsilon=1e-3),
            mb.layer_norm(x=x, axes=[3], gamma=g1, beta=b1),
            mb.layer_norm(x=x, axes=[-1, 2]),  # unsorted axes
            mb.layer_norm(x=x, axes=[0, 1, 2, 3]),  # all axes (coremltools cannot build axes=None)
            mb.layer_norm(x=x, axes=[1, 3]),  # non-trailing axes
        ),
        {"x": x},
        target=target,
    )
    tx = t(x)
    np.testing.assert_allclose(outs[0], F.layer_norm(tx, (4, 5), t(g2), t(b2), eps=1e-3).numpy(), **TOL)
    np.testing.assert_allclose(outs[1], F.layer_norm(tx, (5,), t(g1), t(b1)).numpy(), **TOL)
    np.testing.assert_allclose(outs[2], F.layer_norm(tx, (4, 5)).numpy(), **TOL)
    np.testing.assert_allclose(outs[3], F.layer_norm(tx, (2, 3, 4, 5)).numpy(), **TOL)
    m = x.mean(axis=(1, 3), keepdims=True)
    v = ((x - m) ** 2).mean(axis=(1, 3), keepdims=True)
    np.testing.assert_allclose(outs[4], (x - m) / np.sqrt(v + 1e-5), **TOL)


def test_layer_norm_static_gamma_only():
    """All inputs constant (folded at trace time); gamma without beta."""
    c = rand(3, 4)
    g = rand(4)
    (out,) = run_mil(lambda x: mb.add(x=x, y=mb.layer_norm(x=c, axes=[-1], gamma=g)), {"x": np.zeros((3, 4), np.float32)})
    np.testing.assert_allclose(out, F.layer_norm(t(c), (4,), t(g)).numpy(), **TOL)


@pytest.mark.parametrize("target, shape", [("iOS15", (6, 2, 5)), ("iOS17", (2, 7, 3, 4))])
def test_local_response_norm(target, shape):
    """Channels are axis -3: a rank-3 input is one (C, H, W) image, torch's (1, C, H, W)."""
    x = rand(*shape) * 3
    sizes = [(1, 1e-4, 0.75, 1.0), (2, 0.1, 0.5, 2.0), (3, 1e-4, 0.75, 1.0), (4, 0.3, 0.9, 1.5), (5, 0.2, 0.75, 1.0)]
    outs = run_mil(
        lambda x: tuple(mb.local_response_norm(x=x, size=s, alpha=a, beta=b, k=k) for s, a, b, k in sizes[1:])
        + (mb.local_response_norm(x=x, size=1),),
        {"x": x},
        target=target,
    )
    for out, (s, a, b, k) in zip(outs, sizes[1:] + sizes[:1]):
        batched = x if x.ndim == 4 else x[None]
        want = F.local_response_norm(t(batched), s, alpha=a, beta=b, k=k).numpy().reshape(x.shape)
        np.testing.assert_allclose(out, want, **TOL)
