"""avg_pool, max_pool, l2_pool (1-D..3-D, every pad_type, ceil_mode) against torch."""

import numpy as np
import torch
import torch.nn.functional as F
from coremltools.converters.mil import Builder as mb

from mlc.testing.mil_program import run_mil

RNG = np.random.default_rng(0)
TOL = dict(rtol=1e-5, atol=1e-5)

AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def rand(*shape):
    # Shifted negative so that a padded max that let zeros in would show.
    return (RNG.standard_normal(shape) - 3).astype(np.float32)


def t(a):
    return torch.from_numpy(a)


def torch_pads(pads):
    """MIL [lo0, hi0, lo1, hi1, ...] to F.pad's last-axis-first order."""
    pairs = [pads[2 * i : 2 * i + 2] for i in range(len(pads) // 2)]
    return [p for pair in reversed(pairs) for p in pair]


def ref_max(x, k, s, pads):
    return MAX[x.ndim - 2](F.pad(t(x), torch_pads(pads), value=-np.inf), k, s).numpy()


def ref_sum(x, k, s, pads):
    return AVG[x.ndim - 2](F.pad(t(x), torch_pads(pads)), k, s).numpy() * np.prod(k)


def ref_avg(x, k, s, pads, exclude):
    total = ref_sum(x, k, s, pads)
    count = ref_sum(np.ones_like(x), k, s, pads) if exclude else np.prod(k)
    return total / count


def ref_l2(x, k, s, pads):
    return np.sqrt(ref_sum(x * x, k, s, pads))


def same_pads(sizes, k, s, lower=False):
    pads = []
    for n, kk, ss in zip(sizes, k, s):
        total = max((-(-n // ss) - 1) * ss + kk - n, 0)
        small, big = total // 2, total - total // 2
        pads += [big, small] if lower else [small, big]
    return pads


def test_pool_2d_ios15():
    x = rand(2, 3, 7, 8)
    k, s = (3, 3), (2, 2)
    p1 = [1, 1, 1, 1]
    cases = [
        (lambda x: mb.max_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1),
         MAX[2](t(x), k, s, padding=1).numpy()),
        (lambda x: mb.max_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1, ceil_mode=True),
         MAX[2](t(x), k, s, padding=1, ceil_mode=True).numpy()),
        (lambda x: mb.max_pool(x=x, kernel_sizes=k, strides=s, pad_type="valid", ceil_mode=True),
         MAX[2](t(x), k, s, ceil_mode=True).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1),
         AVG[2](t(x), k, s, padding=1).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1, exclude_padding_from_average=True),
         AVG[2](t(x), k, s, padding=1, count_include_pad=False).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1, ceil_mode=True),
         AVG[2](t(x), k, s, padding=1, ceil_mode=True).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=p1, ceil_mode=True,
                               exclude_padding_from_average=True),
         AVG[2](t(x), k, s, padding=1, ceil_mode=True, count_include_pad=False).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=(2, 3), strides=(3, 2), pad_type="valid", ceil_mode=True),
         AVG[2](t(x), (2, 3), (3, 2), ceil_mode=True).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=(2, 3), strides=(1, 2), pad_type="valid"),
         AVG[2](t(x), (2, 3), (1, 2)).numpy()),
        (lambda x: mb.max_pool(x=x, kernel_sizes=(4, 3), strides=(3, 1), pad_type="same"),
         ref_max(x, (4, 3), (3, 1), same_pads((7, 8), (4, 3), (3, 1)))),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=(4, 3), strides=(3, 1), pad_type="same"),
         ref_avg(x, (4, 3), (3, 1), same_pads((7, 8), (4, 3), (3, 1)), exclude=False)),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=(4, 3), strides=(3, 1), pad_type="same", exclude_padding_from_average=True),
         ref_avg(x, (4, 3), (3, 1), same_pads((7, 8), (4, 3), (3, 1)), exclude=True)),
        (lambda x: mb.max_pool(x=x, kernel_sizes=(2, 2), strides=(1, 1), pad_type="custom", pad=[0, 2, 1, 0]),
         ref_max(x, (2, 2), (1, 1), [0, 2, 1, 0])),
        (lambda x: mb.l2_pool(x=x, kernel_sizes=(2, 3), strides=(2, 1), pad_type="valid"),
         ref_l2(x, (2, 3), (2, 1), [0] * 4)),
        (lambda x: mb.l2_pool(x=x, kernel_sizes=(3, 2), strides=(2, 3), pad_type="same"),
         ref_l2(x, (3, 2), (2, 3), same_pads((7, 8), (3, 2), (2, 3)))),
    ]
    outs = run_mil(lambda x: tuple(f(x) for f, _ in cases), {"x": x}, target="iOS15")
    for i, (out, (_, want)) in enumerate(zip(outs, cases)):
        assert out.shape == want.shape, i
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"case {i}")


def test_pool_1d_ios17_same_lower_and_asymmetric():
    x = rand(2, 3, 9)
    pl = same_pads((9,), (4,), (2,), lower=True)
    cases = [
        (lambda x: mb.max_pool(x=x, kernel_sizes=[4], strides=[2], pad_type="same_lower"), ref_max(x, (4,), (2,), pl)),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=[4], strides=[2], pad_type="same_lower"),
         ref_avg(x, (4,), (2,), pl, exclude=False)),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=[4], strides=[2], pad_type="same_lower", exclude_padding_from_average=True),
         ref_avg(x, (4,), (2,), pl, exclude=True)),
        (lambda x: mb.l2_pool(x=x, kernel_sizes=[4], strides=[2], pad_type="same_lower"), ref_l2(x, (4,), (2,), pl)),
        (lambda x: mb.max_pool(x=x, kernel_sizes=[3], pad_type="custom", pad=[2, 0]), ref_max(x, (3,), (1,), [2, 0])),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=[3], strides=[2], pad_type="custom", pad=[0, 1], exclude_padding_from_average=True),
         ref_avg(x, (3,), (2,), [0, 1], exclude=True)),
        (lambda x: mb.max_pool(x=x, kernel_sizes=[2], strides=[2], pad_type="valid", ceil_mode=True),
         MAX[1](t(x), 2, 2, ceil_mode=True).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=[3], strides=[2], pad_type="custom", pad=[1, 1], ceil_mode=True),
         AVG[1](t(x), 3, 2, padding=1, ceil_mode=True).numpy()),
    ]
    outs = run_mil(lambda x: tuple(f(x) for f, _ in cases), {"x": x}, target="iOS17")
    for i, (out, (_, want)) in enumerate(zip(outs, cases)):
        assert out.shape == want.shape, i
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"case {i}")


def test_pool_3d():
    x = rand(1, 2, 5, 6, 7)
    k, s = (2, 3, 2), (1, 2, 2)
    cases = [
        (lambda x: mb.max_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=[1, 1, 1, 1, 1, 1]),
         MAX[3](t(x), k, s, padding=1).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="custom", pad=[1, 1, 1, 1, 1, 1],
                               exclude_padding_from_average=True),
         AVG[3](t(x), k, s, padding=1, count_include_pad=False).numpy()),
        (lambda x: mb.avg_pool(x=x, kernel_sizes=k, strides=s, pad_type="same"),
         ref_avg(x, k, s, same_pads((5, 6, 7), k, s), exclude=False)),
        (lambda x: mb.max_pool(x=x, kernel_sizes=k, pad_type="valid"), MAX[3](t(x), k, 1).numpy()),
    ]
    outs = run_mil(lambda x: tuple(f(x) for f, _ in cases), {"x": x}, target="iOS15")
    for i, (out, (_, want)) in enumerate(zip(outs, cases)):
        assert out.shape == want.shape, i
        np.testing.assert_allclose(out, want, **TOL, err_msg=f"case {i}")


def test_pool_coremltools_expectations():
    """Apple's expected values for same_lower (iOS16+), where the extra padding goes first."""
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    outs = run_mil(
        lambda x: tuple(
            f(x=x, kernel_sizes=[2, 2], pad_type="same_lower") for f in (mb.avg_pool, mb.max_pool, mb.l2_pool)
        ),
        {"x": x},
        target="iOS16",
    )
    np.testing.assert_allclose(outs[0].ravel(), [0.25, 0.75, 1, 2.5], **TOL)
    np.testing.assert_allclose(outs[1].ravel(), [1, 2, 3, 4], **TOL)
    np.testing.assert_allclose(outs[2].ravel(), [1, 2.236068, 3.162278, 5.477226], **TOL)


def test_pool_static_input():
    """A constant input pools at trace time."""
    c = rand(1, 2, 4, 4)
    (out,) = run_mil(
        lambda x: mb.add(x=x, y=mb.max_pool(x=c, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid")),
        {"x": np.zeros((1, 2, 2, 2), np.float32)},
        target="iOS15",
    )
    np.testing.assert_allclose(out, MAX[2](t(c), 2, 2).numpy(), **TOL)
