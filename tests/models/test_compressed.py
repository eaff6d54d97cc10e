"""Compressed weights end to end: a torch model converted to an ML Program and compressed with
``coremltools.optimize.coreml`` (palettization, linear quantization, pruning, and their joint
forms), run by mlc, against torch run with the weights coremltools itself decompresses.

The model has one conv or linear branch per compression scheme, so each branch's slice of the
output checks one decompression: a wrong one moves that slice far beyond the tolerance (see
``test_schemes_change_the_weights``).
"""

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mlc  # noqa: E402
from mlc.testing import torch_models  # noqa: E402

cto = pytest.importorskip("coremltools.optimize.coreml")

P, Q, S = cto.OpPalettizerConfig, cto.OpLinearQuantizerConfig, cto.OpMagnitudePrunerConfig
T = {"weight_threshold": 256}  # compress every branch's weight, not the biases


def _pal(nbits, **kw):
    return P(mode="uniform", nbits=nbits, **T, **kw)


def _grouped(nbits, **kw):
    return _pal(nbits, granularity="per_grouped_channel", group_size=4, **kw)


# branch -> (layer kind, {stage: config}); stages run prune -> palettize -> quantize, later
# stages with joint_compression so that a branch in two stages is jointly compressed (iOS18).
BRANCHES = {
    "iOS18": {
        **{f"pal{n}": ("linear", {"palettize": _pal(n)}) for n in (1, 2, 3, 4, 6, 8)},
        **{f"pal{n}_grouped": ("linear", {"palettize": _grouped(n)}) for n in (1, 2, 3, 4, 6, 8)},
        "pal3_grouped_conv_scaled": ("conv", {"palettize": _grouped(3, enable_per_channel_scale=True)}),
        "pal4_scaled": ("linear", {"palettize": _pal(4, enable_per_channel_scale=True)}),
        "pal_vector": ("linear", {"palettize": P(mode="unique", cluster_dim=2, granularity="per_grouped_channel", group_size=8, **T)}),
        "int8_tensor": ("linear", {"quantize": Q(dtype="int8", granularity="per_tensor", **T)}),
        "uint8_channel": ("linear", {"quantize": Q(dtype="uint8", mode="linear", granularity="per_channel", **T)}),
        "int4_block": ("linear", {"quantize": Q(dtype="int4", granularity="per_block", block_size=8, **T)}),
        "uint4_block_conv": ("conv", {"quantize": Q(dtype="uint4", mode="linear", granularity="per_block", block_size=4, **T)}),
        "int8_block_conv": ("conv", {"quantize": Q(dtype="int8", granularity="per_block", block_size=(4, 2, 3, 0), **T)}),
        "pruned": ("linear", {"prune": S(target_sparsity=0.6, **T)}),
        "pruned_conv_nm": ("conv", {"prune": S(n_m_ratio=(2, 4), **T)}),
        "pruned_pal": ("linear", {"prune": S(target_sparsity=0.5, **T), "palettize": _pal(2)}),
        "pruned_pal_grouped_conv": ("conv", {"prune": S(target_sparsity=0.5, **T), "palettize": _grouped(3)}),
        "pruned_int8": ("linear", {"prune": S(target_sparsity=0.5, **T), "quantize": Q(dtype="int8", **T)}),
        "pruned_int4_block_conv": ("conv", {"prune": S(target_sparsity=0.4, **T), "quantize": Q(dtype="int4", granularity="per_block", block_size=4, **T)}),
        "pal4_int8_lut": ("linear", {"palettize": _pal(4), "quantize": Q(dtype="int8", granularity="per_tensor", **T)}),
    },
    "iOS16": {  # iOS16 palettizes per tensor with 1, 2, 4, 6 or 8 bits and quantizes to 8 bits
        **{f"pal{n}": ("linear", {"palettize": _pal(n)}) for n in (1, 2, 4, 6, 8)},
        "pal4_conv": ("conv", {"palettize": _pal(4)}),
        "int8_tensor": ("linear", {"quantize": Q(dtype="int8", granularity="per_tensor", **T)}),
        "uint8_channel_conv": ("conv", {"quantize": Q(dtype="uint8", mode="linear", granularity="per_channel", **T)}),
        "pruned": ("linear", {"prune": S(target_sparsity=0.6, **T)}),
        "pruned_conv": ("conv", {"prune": S(target_sparsity=0.3, **T)}),
    },
}
CASES = [(target, branch) for target, branches in BRANCHES.items() for branch in branches]
STAGES = (("prune", cto.prune_weights), ("palettize", cto.palettize_weights), ("quantize", cto.linear_quantize_weights))


class Branches(torch.nn.Module):
    """One conv (8 -> 16 channels, 3x3) or linear (288 -> 16) layer per branch, outputs concatenated."""

    def __init__(self, branches):
        super().__init__()
        layers = {name: torch.nn.Conv2d(8, 16, 3) if kind == "conv" else torch.nn.Linear(288, 16) for name, (kind, _) in branches.items()}
        self.branches = torch.nn.ModuleDict(layers)
        if "pal_vector" in layers:  # few distinct 2-vectors along the output channels, for "unique" vector palettization
            with torch.no_grad():
                pairs = torch.randn(4, 2, 1)[torch.randint(0, 4, (8, 288))]  # (8, 288, 2, 1)
                layers["pal_vector"].weight.copy_(pairs.permute(0, 2, 1, 3).reshape(16, 288))

    def forward(self, x):
        return torch.cat([layer(x if isinstance(layer, torch.nn.Conv2d) else x.flatten(1)).flatten(1) for layer in self.branches.values()], 1)

    def slices(self):
        """Each branch's slice of the output."""
        start, out = 0, {}
        for name, layer in self.branches.items():
            size = 16 * 4 * 4 if isinstance(layer, torch.nn.Conv2d) else 16
            out[name] = slice(start, start + size)
            start += size
        return out


def _compress(mlmodel, branches, joint: bool):
    """Apply each stage to the branches that name it; a branch's ops are those named after its weight."""
    for i, (stage, compress) in enumerate(STAGES):
        names = {}
        for op in mlmodel._mil_program.functions["main"].operations:
            for branch, (_, stages) in branches.items():
                if stage in stages and op.name.startswith(f"branches_{branch}_weight"):
                    names[op.name] = stages[stage]
        if names:
            mlmodel = compress(mlmodel, cto.OptimizationConfig(op_name_configs=names), joint_compression=joint and i > 0)
    return mlmodel


def _decompressed_weights(mlmodel) -> list[np.ndarray]:
    """The weights coremltools decompresses, in branch order."""
    dense = cto.decompress_weights(mlmodel)
    ops = [op for op in dense._mil_program.functions["main"].operations if op.op_type in ("conv", "linear")]
    return [op.weight.val for op in ops]


@pytest.fixture(scope="module")
def compressed():
    """``compressed(target)``: the torch module, its input, the compressed model, mlc's load of it,
    torch's output with the decompressed weights and with the original ones."""
    cache = {}

    def get(target):
        if target not in cache:
            torch.manual_seed(0)
            module = Branches(BRANCHES[target]).eval()
            x = torch.randn(1, 8, 6, 6)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlmodel = _compress(torch_models.convert(module, (x,), target=target), BRANCHES[target], joint=target == "iOS18")
                weights = _decompressed_weights(mlmodel)
            decompressed = copy.deepcopy(module)
            with torch.no_grad():
                for layer, w in zip(decompressed.branches.values(), weights):
                    layer.weight.copy_(torch.from_numpy(np.asarray(w, np.float32)))
            model = mlc.load(mlmodel)
            cache[target] = {
                "module": module,
                "mlmodel": mlmodel,
                "model": model,
                "output": model.predict({"x": x.numpy()})["y"],
                "reference": torch_models.reference(decompressed, (x,)),
                "original": torch_models.reference(module, (x,)),
            }
        return cache[target]

    return get


def _producers(var) -> set[str]:
    """The constexpr op types that compute ``var``."""
    op = var.op
    if op is None or not op.op_type.startswith("constexpr_"):
        return set()
    return {op.op_type}.union(*(_producers(v) for v in op.inputs.values()))


def _expected_producers(target, stages) -> set[str]:
    if target == "iOS16":
        return {{"prune": "constexpr_sparse_to_dense", "palettize": "constexpr_lut_to_dense", "quantize": "constexpr_affine_dequantize"}[s] for s in stages}
    sparse = "prune" in stages
    ops = {"constexpr_sparse_to_dense"} if sparse else set()
    if "palettize" in stages:
        ops.add("constexpr_lut_to_sparse" if sparse else "constexpr_lut_to_dense")
        if stages["palettize"].enable_per_channel_scale or "quantize" in stages:
            ops.add("constexpr_blockwise_shift_scale")  # LUT scales, or a quantized LUT
    elif "quantize" in stages:
        ops.add("constexpr_sparse_blockwise_shift_scale" if sparse else "constexpr_blockwise_shift_scale")
    return ops


@pytest.mark.parametrize("target, branch", CASES)
def test_branch_weight_is_compressed(compressed, target, branch):
    ops = [op for op in compressed(target)["mlmodel"]._mil_program.functions["main"].operations if op.op_type in ("conv", "linear")]
    weight = ops[list(BRANCHES[target]).index(branch)].weight
    assert _producers(weight) == _expected_producers(target, BRANCHES[target][branch][1])


@pytest.mark.parametrize("target, branch", CASES)
def test_branch_matches_torch_with_decompressed_weights(compressed, target, branch):
    run = compressed(target)
    s = run["module"].slices()[branch]
    np.testing.assert_allclose(run["output"][0, s], run["reference"][0, s], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", list(BRANCHES))
def test_schemes_change_the_weights(compressed, target):
    """Each lossy branch's compression moves its output by far more than the tolerance above."""
    run = compressed(target)
    for branch, s in run["module"].slices().items():
        if branch != "pal_vector":  # "unique" palettization of weights with 4 distinct vectors is lossless
            assert np.abs(run["reference"][0, s] - run["original"][0, s]).max() > 1e-3, branch


def _assert_compressed_params(params, small_dtypes):
    dtypes = {np.dtype(v.dtype) for v in params.values()}
    assert {np.dtype(d) for d in small_dtypes} <= dtypes, dtypes
    dense = [k for k, v in params.items() if tuple(v.shape) in ((16, 288), (16, 8, 3, 3)) and np.dtype(v.dtype).kind == "f"]
    assert not dense, dense


def test_ios16_weights_stay_compressed(compressed):
    """Packed indices and masks (uint8), quantized data (int8, uint8) are the params, not dense weights."""
    _assert_compressed_params(compressed("iOS16")["model"].jax_function()[1], [np.uint8, np.int8])


@pytest.mark.xfail(strict=True, reason="mlc.frontends.mil.lower keeps iOS18 constexpr inputs, serialized inline, as numpy constants")
def test_ios18_weights_stay_compressed(compressed):
    _assert_compressed_params(compressed("iOS18")["model"].jax_function()[1], [np.uint8, np.int8])


FP16_QUANTIZED = [
    ("iOS16", Q(dtype="int8", mode="linear", granularity="per_channel", **T)),
    ("iOS18", Q(dtype="int8", mode="linear", granularity="per_channel", **T)),
    ("iOS18", Q(dtype="int4", granularity="per_block", block_size=4, **T)),  # iOS16 has no per-block
]


@pytest.mark.parametrize("target, config", FP16_QUANTIZED, ids=["iOS16-int8_channel", "iOS18-int8_channel", "iOS18-int4_block"])
def test_fp16_model_reads_weights_rounded_as_decompressed(target, config):
    """An fp16 model computing in fp32 (mlc's default on CPU) reads its dequantized weights
    rounded to fp16, as Core ML materialises a ``constexpr_*`` op's fp16 output at load: the
    compressed model predicts exactly what coremltools' own decompression of it predicts
    (coremltools' ``test_linear_quantization_stress`` holds the two to rtol 1e-7). Computed in
    fp32 without the rounding, the two differ by up to fp16's half-ulp per weight."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 3)).eval()
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = torch_models.convert(module, (torch.from_numpy(x),), target=target, precision="fp16")
        compressed = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=config))
        decompressed = cto.decompress_weights(compressed)
    ops = {op.op_type for op in compressed._mil_program.functions["main"].operations}
    assert ops & {"constexpr_affine_dequantize", "constexpr_blockwise_shift_scale"}
    name = next(iter(mlmodel.get_spec().description.output)).name
    got = mlc.load(compressed).predict({"x": x})[name]
    want = mlc.load(decompressed).predict({"x": x})[name]
    np.testing.assert_array_equal(got, want)
