"""Classifier outputs (MIL ``classify``): ``classLabel`` plus the probabilities dictionary."""

import numpy as np
import pytest
import torch

import mlc


class Head(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(5, n)

    def forward(self, x):
        return torch.softmax(self.fc(x), dim=-1)


@pytest.mark.parametrize("labels", [["cat", "dog", "bird"], [10, 20, 30, 40]])
def test_classifier_outputs(ct, labels):
    module = Head(len(labels)).eval()
    traced = torch.jit.trace(module, torch.rand(1, 5))
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 5))],
                         classifier_config=ct.ClassifierConfig(labels), minimum_deployment_target=ct.target.iOS15,
                         compute_precision=ct.precision.FLOAT32)
    model = mlc.load(mlmodel)
    x = np.random.default_rng(0).standard_normal((1, 5)).astype(np.float32)
    with torch.no_grad():
        probs = module(torch.from_numpy(x)).numpy()[0]
    out = model.predict({"x": x})
    assert out["classLabel"] == labels[int(np.argmax(probs))]
    assert type(out["classLabel"]) is type(labels[0])
    got = out["classLabel_probs"]
    assert list(got) == labels
    np.testing.assert_allclose([got[k] for k in labels], probs, rtol=1e-5)

    batch = np.random.default_rng(1).standard_normal((4, 1, 5)).astype(np.float32)
    outs = model.predict_batch({"x": batch})
    assert len(outs["classLabel"]) == 4
    for i in range(4):
        single = model.predict({"x": batch[i]})
        assert outs["classLabel"][i] == single["classLabel"]
        np.testing.assert_allclose(list(outs["classLabel_probs"][i].values()), list(single["classLabel_probs"].values()), rtol=1e-5)


def test_demo_model_names_the_color():
    from PIL import Image

    from mlc.cli import DEMO_IMAGE, DEMO_MODEL

    model = mlc.load(DEMO_MODEL)
    out = model.predict({"image": Image.open(DEMO_IMAGE)})
    assert out["classLabel"] == "red"
    assert abs(sum(out["classLabel_probs"].values()) - 1.0) < 1e-3
