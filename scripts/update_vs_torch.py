"""How close ``mlc.update`` comes to torch: the largest weight difference after training the
same updatable model (same initial weights, mini-batches in the same order, same
hyper-parameters) for each optimizer and loss. Writes ``bench/update_vs_torch.md``.

    python scripts/update_vs_torch.py [--out bench/update_vs_torch.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import mlc
from mlc.io.atomic import atomic_write
from mlc.testing.updatable import CLASSES, conv_model, max_weight_difference, mlp_model, torch_param, torch_train

MLP_PARAMS = {"fc1/weights": "fc1.weight", "fc1/bias": "fc1.bias", "fc2/weights": "fc2.weight", "fc2/bias": "fc2.bias"}
CONV_PARAMS = {"conv/weights": "conv.weight", "conv/bias": "conv.bias", "fc/weights": "fc.weight", "fc/bias": "fc.bias"}


def _run(spec, data):
    seen = []
    task = mlc.update(mlc.load(spec), data, progress={"mini_batch_end": lambda c: seen.append(c.indices.copy())}, show_progress=False)
    return task, seen


def case(model: str, optimizer: str, loss: str, n: int = 64) -> dict:
    rng = np.random.default_rng(1)
    if model == "mlp":
        spec, net = mlp_model(loss, optimizer, epochs=10)
        x = rng.normal(size=(n, 4)).astype(np.float32)
        names = MLP_PARAMS
    else:
        spec, net = conv_model(optimizer, epochs=10)
        x = rng.normal(size=(n, 2, 6, 6)).astype(np.float32)
        names = CONV_PARAMS
    index = rng.integers(0, 3, n)
    if loss == "mse":
        target = rng.normal(size=(n, 3)).astype(np.float32)
        data = {"x": x, "y_true": target}
    elif model == "mlp":
        target, data = index, {"x": x, "label": [CLASSES[i] for i in index]}
    else:
        target, data = index, {"image": x, "probs_true": index.reshape(-1, 1).astype(np.int32)}
    start = time.perf_counter()
    task, batches = _run(spec, data)
    seconds = time.perf_counter() - start
    trainable = [p for name, p in net.named_parameters() if not name.startswith(("out.", "bn."))]
    torch_train(net, trainable, optimizer, loss, x, target, batches)
    scale = max(float(np.max(np.abs(torch_param(net, t)))) for t in names.values())
    return {
        "model": model, "optimizer": optimizer, "loss": loss, "steps": len(batches),
        "max_diff": max_weight_difference(task.model, net, names), "max_weight": scale,
        "loss_first": float(task.history.epoch_loss[0]), "loss_last": float(task.history.epoch_loss[-1]), "seconds": seconds,
    }


CASES = [
    ("mlp", "sgd", "ce"), ("mlp", "sgd", "mse"), ("mlp", "adam", "ce"), ("mlp", "adam", "mse"),
    ("mlp", "sgd_plain", "ce"), ("conv", "sgd", "ce"), ("conv", "adam", "ce"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "bench", "update_vs_torch.md"))
    args = p.parse_args()
    rows = [case(*c) for c in CASES]
    lines = [
        "# mlc.update against torch",
        "",
        "`python scripts/update_vs_torch.py`: each updatable model (coremltools' NeuralNetworkBuilder) is trained",
        "by `mlc.update` and by a torch loop from the same initial weights, on the same mini-batches in the same",
        "order (64 examples, mini-batches of 4, 10 epochs, shuffled with the model's seed), with the same",
        "hyper-parameters. Loss: the mean over the mini-batch (cross entropy `-log p[target]`; MSE over all",
        "elements). `max |diff|` is the largest absolute difference between any trained weight of mlc and of torch.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU; float32.",
        "",
        "| model | optimizer | loss | steps | max abs diff | max abs weight | loss epoch 1 -> 10 | mlc time (s) |",
        "|---|---|---|---:|---:|---:|---|---:|",
    ]
    labels = {"sgd": "SGD (momentum 0.9)", "sgd_plain": "SGD (no momentum)", "adam": "Adam"}
    for r in rows:
        lines.append(
            f"| {r['model']} | {labels[r['optimizer']]} | {'cross entropy' if r['loss'] == 'ce' else 'MSE'} | {r['steps']} | "
            f"{r['max_diff']:.2e} | {r['max_weight']:.3g} | {r['loss_first']:.4f} -> {r['loss_last']:.4f} | {r['seconds']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    with atomic_write(args.out) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
