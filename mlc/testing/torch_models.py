"""Small torch models converted with coremltools (TorchScript trace), for tests and benchmarks.

    module, example = build("resnet")
    path = convert(module, example, target="iOS18", precision="fp16", path="/tmp/resnet.mlpackage")
    mlc.load(path).predict({"x": example[0].numpy()})

Each model has random weights from a fixed seed (BatchNorm running statistics and affine
parameters re-initialised to non-trivial values) and a few hundred thousand parameters at most.
Inputs are named ``x`` (float) or ``ids`` (int32 token ids); the single output is named ``y``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Callable

import numpy as np

from mlc.io.proto import import_coremltools

MODELS = ("resnet", "mobilenet_v2", "transformer_encoder", "gpt_decoder", "unet")


def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    return torch, nn, F


# -- the modules ------------------------------------------------------------------------------


def resnet():
    """A ResNet-style CNN: conv/batch norm/relu basic blocks, a strided 1x1 shortcut, max and average pooling.

    coremltools folds a batch norm that follows a conv into the conv's weights; the final
    batch norm follows a relu, so it stays a ``batch_norm`` op.
    """
    torch, nn, F = _torch()

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    class ResNet(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
            self.bn = nn.BatchNorm2d(64)
            self.head = nn.Linear(64, classes)

        def forward(self, x):
            h = self.bn(self.layers(self.pool(self.stem(x))))
            return self.head(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    return ResNet(), (torch.randn(1, 3, 32, 32),)


def mobilenet_v2():
    """A MobileNetV2-style net: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project), relu6, hardswish."""
    torch, nn, F = _torch()

    def conv_bn(cin, cout, k, stride=1, groups=1, act=nn.ReLU6):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand, act=nn.ReLU6):
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            expand_layer = [conv_bn(cin, hidden, 1, act=act)] if expand != 1 else []
            self.block = nn.Sequential(
                *expand_layer,
                conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act),
                conv_bn(hidden, cout, 1, act=None),
            )

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetV2(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.features = nn.Sequential(
                conv_bn(3, 16, 3, 2, act=nn.Hardswish),
                InvertedResidual(16, 16, 1, 1),
                InvertedResidual(16, 24, 2, 4),
                InvertedResidual(24, 24, 1, 4),
                InvertedResidual(24, 32, 2, 4, act=nn.Hardswish),
                InvertedResidual(32, 32, 1, 4, act=nn.Hardswish),
                conv_bn(32, 128, 1, act=nn.Hardswish),
            )
            self.pool = nn.AvgPool2d(4)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(128, classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.pool(self.features(x)), 1))

    return MobileNetV2(), (torch.randn(1, 3, 32, 32),)


def _attention_modules():
    torch, nn, F = _torch()

    class SelfAttention(nn.Module):
        """Multi-head self-attention; ``mode`` picks F.scaled_dot_product_attention (optionally causal)
        or an explicit causal softmax(q k^T / sqrt(d) + mask) v with a registered lower-triangular mask."""

        def __init__(self, dim, heads, mode="sdpa", max_len=0):
            super().__init__()
            self.heads, self.mode = heads, mode
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)
            if mode == "explicit_causal":
                self.register_buffer("mask", torch.tril(torch.ones(max_len, max_len, dtype=torch.bool)))

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).split(c, dim=-1)
            q, k, v = (z.reshape(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
            if self.mode == "explicit_causal":
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // self.heads))
                att = att.masked_fill(~self.mask[:t, :t], float("-inf"))
                a = torch.softmax(att, dim=-1) @ v
            else:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=self.mode == "sdpa_causal")
            return self.proj(a.transpose(1, 2).reshape(b, t, c))

    class Block(nn.Module):
        """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with GELU."""

        def __init__(self, dim, heads, hidden, mode="sdpa", max_len=0, approximate="none"):
            super().__init__()
            self.ln1 = nn.LayerNorm(dim)
            self.attn = SelfAttention(dim, heads, mode, max_len)
            self.ln2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate=approximate), nn.Linear(hidden, dim))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    return Block


def transformer_encoder():
    """A transformer encoder block (layer_norm, F.scaled_dot_product_attention, gelu) on (1, 16, 64) features."""
    torch, _, _ = _torch()
    Block = _attention_modules()
    return Block(64, 4, 128), (torch.randn(1, 16, 64),)


def gpt_decoder():
    """A GPT-style decoder over int32 token ids: token + position embeddings, two causal blocks, LM head.

    The first block masks explicitly (tril buffer, masked_fill, softmax), the second uses
    F.scaled_dot_product_attention(is_causal=True); the MLPs use tanh-approximated GELU.
    """
    torch, nn, _ = _torch()
    Block = _attention_modules()
    vocab, dim, seq = 96, 64, 16

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, dim)
            self.pos = nn.Embedding(seq, dim)
            self.blocks = nn.Sequential(
                Block(dim, 4, 128, "explicit_causal", seq, approximate="tanh"),
                Block(dim, 4, 128, "sdpa_causal", approximate="tanh"),
            )
            self.ln = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            h = self.tok(ids) + self.pos(pos)
            return self.head(self.ln(self.blocks(h)))

    ids = torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(1))
    return GPT(), (ids,)


def unet():
    """A UNet-style net: conv/batch norm encoder with max pooling, a conv_transpose and a bilinear
    upsample decoder with skip concatenations, plus a nearest-upsampled side output."""
    torch, nn, F = _torch()

    def double_conv(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        )

    class UNet(nn.Module):
        def __init__(self, classes=2):
            super().__init__()
            self.enc1, self.enc2, self.mid = double_conv(3, 8), double_conv(8, 16), double_conv(16, 32)
            self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
            self.dec2 = double_conv(32, 16)
            self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.dec1 = double_conv(16 + 8, 8)
            self.head = nn.Conv2d(8, classes, 1)
            self.side = nn.Conv2d(32, classes, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(F.max_pool2d(e1, 2))
            m = self.mid(F.max_pool2d(e2, 2))
            d2 = self.dec2(torch.cat([self.up2(m), e2], dim=1))
            d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
            return self.head(d1) + F.interpolate(self.side(m), scale_factor=4, mode="nearest")

    return UNet(), (torch.randn(1, 3, 32, 32),)


_BUILDERS: dict[str, Callable] = {
    "resnet": resnet,
    "mobilenet_v2": mobilenet_v2,
    "transformer_encoder": transformer_encoder,
    "gpt_decoder": gpt_decoder,
    "unet": unet,
}


def randomize_batch_norm(module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters (in place)."""
    torch, nn, _ = _torch()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))


def build(name: str, seed: int = 0):
    """``(module, example_inputs)`` for model ``name``: eval mode, weights from ``seed``."""
    torch, _, _ = _torch()
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    torch.manual_seed(seed)
    module, example = _BUILDERS[name]()
    randomize_batch_norm(module, seed)
    return module.eval(), example


def input_names(example_inputs) -> list[str]:
    """``ids`` for an integer input, ``x`` for a float one (numbered when there are several)."""
    names = ["ids" if not t.is_floating_point() else "x" for t in example_inputs]
    return names if len(names) == 1 else [f"{n}{i}" for i, n in enumerate(names)]


def convert(module, example_inputs, target: str = "iOS18", precision: str = "fp32", path: str | os.PathLike | None = None):
    """Trace ``module`` with ``example_inputs`` and convert it to an ML Program; save it at ``path``.

    ``target`` is a coremltools deployment target name (``"iOS15"``...), ``precision`` ``"fp32"``
    or ``"fp16"``. Integer inputs become int32 model inputs, float inputs fp32. Returns ``path``
    (or the ``MLModel`` when ``path`` is None).

    ``target="neuralnetwork"`` converts to a NeuralNetwork model (``convert_to="neuralnetwork"``,
    iOS14, the last NeuralNetwork release) saved as ``.mlmodel``; ``precision="fp16"`` then stores
    its weights as fp16 (``quantize_weights(nbits=16)``), and ``"int8"`` / ``"lut4"`` quantize them
    linearly to 8 bits or to a 4-bit linear lookup table.
    """
    import torch

    ct = import_coremltools()
    if precision not in ("fp32", "fp16") and not (target == "neuralnetwork" and precision in NN_QUANTIZATIONS):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    example_inputs = tuple(example_inputs)
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example_inputs)
    inputs = [
        ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.float32 if t.is_floating_point() else np.int32)
        for n, t in zip(input_names(example_inputs), example_inputs)
    ]
    if target == "neuralnetwork":
        mlmodel = _convert_neuralnetwork(ct, traced, inputs, precision)
    else:
        mlmodel = ct.convert(
            traced,
            inputs=inputs,
            outputs=[ct.TensorType(name="y")],
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            convert_to="mlprogram",
        )
    if path is None:
        return mlmodel
    mlmodel.save(os.fspath(path))
    return path


# NeuralNetwork weight storage -> quantize_weights arguments (nbits, quantization mode)
NN_QUANTIZATIONS = {"fp16": (16, "linear"), "int8": (8, "linear"), "lut4": (4, "linear_lut")}


def _convert_neuralnetwork(ct, traced, inputs, precision: str):
    mlmodel = ct.convert(
        traced, inputs=inputs, outputs=[ct.TensorType(name="y")],
        minimum_deployment_target=ct.target.iOS14, convert_to="neuralnetwork",
    )
    if precision == "fp32":
        return mlmodel
    from coremltools.models.neural_network import quantization_utils

    class WeightLayers(quantization_utils.QuantizedLayerSelector):
        """Weights of compute layers only: constants (a causal mask's -3.4e38) stay fp32."""

        def do_quantize(self, layer, **kwargs):
            return super().do_quantize(layer, **kwargs) and layer.WhichOneof("layer") not in ("loadConstant", "loadConstantND")

    nbits, mode = NN_QUANTIZATIONS[precision]
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per layer
        return quantization_utils.quantize_weights(mlmodel, nbits, mode, selector=WeightLayers())


def reference(module, example_inputs) -> np.ndarray:
    """The module's output on ``example_inputs`` as float32 numpy (the oracle for mlc)."""
    import torch

    with torch.no_grad():
        return module.eval()(*example_inputs).numpy().astype(np.float32)
