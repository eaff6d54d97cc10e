"""Updatable NeuralNetwork models made with coremltools' builder, and their torch twins.

Each builder returns the spec plus the torch module holding the same initial weights, so a
torch training loop is the oracle for ``mlc.update``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CLASSES = ["cat", "dog", "fox"]


def _builder_modules():
    from coremltools.models import datatypes
    from coremltools.models.neural_network import AdamParams, NeuralNetworkBuilder, SgdParams

    return datatypes, NeuralNetworkBuilder, SgdParams, AdamParams


def set_optimizer(builder, optimizer: str, batch: int, epochs: int, seed: int | None = 7):
    _, _, SgdParams, AdamParams = _builder_modules()
    if optimizer == "sgd":
        p = SgdParams(lr=0.05, batch=batch, momentum=0.9)
        p.set_batch(batch, [1, 2, 4, 8, 16, 32])
    elif optimizer == "sgd_plain":
        p = SgdParams(lr=0.1, batch=batch, momentum=0.0)
        p.set_batch(batch, [1, 2, 4, 8, 16, 32])
    else:
        p = AdamParams(lr=0.01, batch=batch, beta1=0.9, beta2=0.999, eps=1e-8)
        p.set_batch(batch, [1, 2, 4, 8, 16, 32])
    (builder.set_sgd_optimizer if optimizer.startswith("sgd") else builder.set_adam_optimizer)(p)
    builder.set_epochs(epochs, allowed_set=[1, 2, 3, 4, 5, 10])
    if seed is not None:
        builder.set_shuffle(seed=seed)


class MLP(nn.Module):
    """x(4) -> innerProduct(8) -> ReLU -> innerProduct(3) [-> softmax]."""

    def __init__(self, softmax: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.softmax = softmax

    def forward(self, x):
        y = self.fc2(torch.relu(self.fc1(x)))
        return torch.softmax(y, dim=-1) if self.softmax else y


def mlp_model(loss: str, optimizer: str, *, classifier: bool = True, batch: int = 4, epochs: int = 5, seed: int | None = 7):
    """``(spec, torch_module)``: loss "ce" (softmax + cross entropy; the target is the class
    label when ``classifier``, else a class index) or "mse" (on the last layer's output)."""
    datatypes, NeuralNetworkBuilder, _, _ = _builder_modules()
    net = MLP(softmax=loss == "ce")
    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    outputs = [("probs", datatypes.Array(3))] if loss == "ce" else [("y", datatypes.Array(3))]
    b = NeuralNetworkBuilder([("x", datatypes.Array(4))], outputs, mode="classifier" if loss == "ce" and classifier else None)
    b.add_inner_product("fc1", w["fc1.weight"], w["fc1.bias"], 4, 8, True, "x", "h")
    b.add_activation("relu", "RELU", "h", "hr")
    b.add_inner_product("fc2", w["fc2.weight"], w["fc2.bias"], 8, 3, True, "hr", "logits" if loss == "ce" else "y")
    if loss == "ce":
        b.add_softmax("softmax", "logits", "probs")
        if classifier:
            b.set_class_labels(CLASSES, predicted_feature_name="label", prediction_blob="probs")
    b.make_updatable(["fc1", "fc2"])
    if loss == "ce":
        b.set_categorical_cross_entropy_loss("loss", "probs")
    else:
        b.set_mean_squared_error_loss("loss", ("y", datatypes.Array(3)))
    set_optimizer(b, optimizer, batch, epochs, seed)
    return b.spec, net


class ConvNet(nn.Module):
    """(2, 6, 6) -> conv 3x3 (4) -> batchnorm -> tanh -> avg pool 2 -> flatten -> fc (3) -> sigmoid -> fc(3) -> softmax."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 2 * 2, 3)
        self.out = nn.Linear(3, 3)
        with torch.no_grad():
            for p in [self.conv.weight, self.conv.bias, self.fc.weight, self.fc.bias, self.out.weight, self.out.bias]:
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
            self.bn.weight.copy_(torch.rand(4, generator=g) + 0.5)
            self.bn.bias.copy_(torch.randn(4, generator=g) * 0.1)
            self.bn.running_mean.copy_(torch.randn(4, generator=g) * 0.1)
            self.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
        self.eval()  # batchnorm uses its stored statistics, as the Core ML layer does

    def forward(self, x):
        y = torch.tanh(self.bn(self.conv(x)))
        y = torch.nn.functional.avg_pool2d(y, 2)
        y = torch.sigmoid(self.fc(torch.flatten(y, 1)))
        return torch.softmax(self.out(y), dim=-1)


def conv_model(optimizer: str, *, batch: int = 4, epochs: int = 3):
    """``(spec, torch_module)``: the conv and first fc layers are updatable, the output fc is
    frozen; cross entropy on a class-index target (not a classifier)."""
    datatypes, NeuralNetworkBuilder, _, _ = _builder_modules()
    net = ConvNet()
    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    b = NeuralNetworkBuilder([("image", datatypes.Array(2, 6, 6))], [("probs", datatypes.Array(3))])
    b.add_convolution(
        "conv", kernel_channels=2, output_channels=4, height=3, width=3, stride_height=1, stride_width=1,
        border_mode="valid", groups=1, W=w["conv.weight"].transpose(2, 3, 1, 0), b=w["conv.bias"], has_bias=True,
        input_name="image", output_name="c",
    )
    b.add_batchnorm("bn", 4, w["bn.weight"], w["bn.bias"], mean=w["bn.running_mean"], variance=w["bn.running_var"],
                    input_name="c", output_name="n", epsilon=net.bn.eps)
    b.add_activation("tanh", "TANH", "n", "t")
    b.add_pooling("pool", 2, 2, 2, 2, "AVERAGE", padding_type="VALID", input_name="t", output_name="p")
    b.add_flatten("flatten", 0, "p", "f")
    b.add_inner_product("fc", w["fc.weight"], w["fc.bias"], 16, 3, True, "f", "g")
    b.add_activation("sigmoid", "SIGMOID", "g", "s")
    b.add_inner_product("out", w["out.weight"], w["out.bias"], 3, 3, True, "s", "logits")
    b.add_softmax("softmax", "logits", "probs")
    b.make_updatable(["conv", "fc"])
    b.set_categorical_cross_entropy_loss("loss", "probs")
    set_optimizer(b, optimizer, batch, epochs)
    return b.spec, net


def torch_param(net, dotted: str) -> np.ndarray:
    """``net``'s parameter ``"fc1.weight"`` as a numpy array."""
    obj = net
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj.detach().numpy()


def max_weight_difference(model, net, names: dict[str, str]) -> float:
    """The largest |mlc param - torch param| over ``names`` (mlc params key -> torch name)."""
    return max(float(np.max(np.abs(np.asarray(model.params[k]).reshape(-1) - torch_param(net, t).reshape(-1)))) for k, t in names.items())


def torch_optimizer(name: str, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)
    if name == "sgd_plain":
        return torch.optim.SGD(params, lr=0.1)
    return torch.optim.Adam(params, lr=0.01, betas=(0.9, 0.999), eps=1e-8)


def torch_train(net, params, optimizer: str, loss: str, x: np.ndarray, target: np.ndarray, batches: list[np.ndarray]):
    """Train ``params`` of ``net`` over ``batches`` (index arrays, in order); mean loss per
    mini-batch: cross entropy ``-log p[target]`` or ``MSELoss()``."""
    opt = torch_optimizer(optimizer, params)
    xt = torch.from_numpy(x)
    for idx in batches:
        opt.zero_grad()
        out = net(xt[idx])
        if loss == "ce":
            value = nn.functional.nll_loss(torch.log(out), torch.from_numpy(target[idx]).long())
        else:
            value = nn.functional.mse_loss(out, torch.from_numpy(target[idx]))
        value.backward()
        opt.step()
    return net
