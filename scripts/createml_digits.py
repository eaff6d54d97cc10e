"""Measure mlc.createml's image classifier on scikit-learn's handwritten digits.

The 1797 8x8 digits (scikit-learn's bundled copy) are written as 32x32 PNGs, split 80/20 per
class with seed 0 (``mlc.testing.images.write_digits_dataset``), and an ``ImageClassifier``
with the default EfficientNet-Lite0 extractor is trained on the 80% with default parameters
(25 iterations, automatic validation) and evaluated on the 20%. Reported: test accuracy, the
wall time of training from a cold feature cache (extraction + solver) and again from a warm one,
and, on the same cached features, the loss and accuracies L-BFGS and Adam reach in 25
iterations (why L-BFGS is the default). Writes ``bench/createml_digits.md``.

    .venv/bin/python scripts/createml_digits.py [--out bench/createml_digits.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402


def _machine() -> str:
    import jax

    cpus = os.cpu_count()
    return f"{platform.processor() or platform.machine()}, {cpus} CPU cores, {platform.system()} {platform.release()}; jax {jax.__version__} on {jax.devices()[0].platform}"


def _solver_comparison(classifier, test_dir: str) -> list[tuple[str, float, float, float]]:
    from mlc.createml import image_source
    from mlc.createml.logistic import fit_softmax_regression

    train = classifier.training_data
    x = classifier.features(train.paths)
    index = {label: i for i, label in enumerate(classifier.labels)}
    y = np.asarray([index[t] for t in train.targets])
    test = image_source(test_dir, what="testing data", min_classes=1, check_balance=False)
    xt = classifier.features(test.paths)
    yt = np.asarray([index[t] for t in test.targets])
    rows = []
    for solver in ("lbfgs", "adam"):
        start = time.perf_counter()
        model, history = fit_softmax_regression(x, y, len(index), max_iterations=25, solver=solver)
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(model.probabilities(xt).argmax(axis=1) == yt))
        rows.append((solver, history[-1].loss, history[-1].training_accuracy, accuracy, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "bench", "createml_digits.md"))
    args = parser.parse_args()

    from mlc.io.atomic import atomic_write
    from mlc.createml import ImageClassifier
    from mlc.testing.images import write_digits_dataset

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLC_CACHE_DIR"] = os.path.join(tmp, "cache")  # a cold cache, measured
        train_dir, test_dir = write_digits_dataset(os.path.join(tmp, "digits"), fraction_test=0.2, seed=0, size=32)
        start = time.perf_counter()
        classifier = ImageClassifier(train_dir, seed=0, show_progress=True)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        metrics = classifier.evaluation(on=test_dir)
        evaluation = time.perf_counter() - start
        start = time.perf_counter()
        ImageClassifier(train_dir, seed=0, show_progress=False)
        warm = time.perf_counter() - start
        solvers = _solver_comparison(classifier, test_dir)
        n_train, n_val = len(classifier.training_data), len(classifier.validation_data or [])
        last = classifier.history[-1]

    lines = [
        "# mlc.createml on scikit-learn's digits",
        "",
        f"Machine: {_machine()}.",
        "Written by `scripts/createml_digits.py`.",
        "",
        "The setup:",
        "",
        "- Data: the 1797 8x8 digits, written as 32x32 PNGs and split 80/20 per class with seed 0.",
        f"- Training images: {n_train}, with {n_val} held out for automatic validation. Testing images: {metrics.count}.",
        "- Feature extractor: EfficientNet-Lite0, the default, with fp16 weights run in float32 by mlc on the CPU.",
        "- Classifier: multinomial logistic regression, 25 L-BFGS iterations. This is the default `ImageClassifier(train_dir)`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| test accuracy | {metrics.accuracy:.2%} ({round(metrics.accuracy * metrics.count)}/{metrics.count}) |",
        f"| training accuracy (last iteration) | {last.training_accuracy:.2%} |",
        f"| validation accuracy (last iteration) | {last.validation_accuracy:.2%} |" if last.validation_accuracy is not None else "",
        f"| training wall time, cold feature cache (extraction of {n_train + n_val} images + solver) | {cold:.1f} s |",
        f"| training wall time, warm feature cache | {warm:.1f} s |",
        f"| evaluation wall time ({metrics.count} images, features extracted) | {evaluation:.1f} s |",
        "",
        "## Solvers, 25 iterations on the same cached features",
        "",
        "| solver | final training loss (with L2) | training accuracy | test accuracy | seconds (including compile) |",
        "|---|---|---|---|---|",
        *[f"| {s} | {loss:.4f} | {tr:.2%} | {te:.2%} | {sec:.1f} |" for s, loss, tr, te, sec in solvers],
        "",
        "## Test metrics",
        "",
        "```",
        metrics.table(),
        "```",
        "",
    ]
    text = "\n".join(line for line in lines if line is not None)
    with atomic_write(args.out) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
