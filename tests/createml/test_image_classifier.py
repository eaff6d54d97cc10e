"""mlc.createml.ImageClassifier: training, evaluation, caching, export, bad input.

Most tests use a tiny pooling extractor (``mlc.testing.extractors``) on scikit-learn's digits
written as PNGs, so they run in seconds; the expected numbers come from numpy on the
classifier's own per-image predictions, from scikit-learn's metrics, or from coremltools
reading the written files. Tests of the shipped EfficientNet-Lite0 extractor are in
``test_default_extractor.py``.
"""

import os
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

import mlc
from mlc.createml import ImageClassifier
from mlc.createml.data import load_image
from mlc.createml.extractor import FeatureExtractor
from mlc.testing.extractors import mlprogram_extractor, pooling_extractor
from mlc.testing.images import write_corrupt_files, write_digits_dataset


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    train, test = write_digits_dataset(root, fraction_test=0.2, seed=0, size=32, limit_per_class=30)
    return train, test


@pytest.fixture(scope="module")
def extractor_path(tmp_path_factory):
    return pooling_extractor(str(tmp_path_factory.mktemp("extractor") / "pool.mlmodel"), size=32, block=4)


@pytest.fixture(scope="module")
def classifier(digits, extractor_path):
    return ImageClassifier(digits[0], feature_extractor=extractor_path, validation=None, show_progress=False, cache_dir=False)


def _files(folder):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)


def _label_of(path):
    return os.path.basename(os.path.dirname(path))


def test_training_beats_chance_by_a_wide_margin(classifier, digits):
    assert classifier.labels == [str(d) for d in range(10)]
    assert len(classifier.history) == 25
    assert classifier.training_metrics.accuracy > 0.95
    assert classifier.evaluation(on=digits[1]).accuracy > 0.8  # chance is 0.1


def test_history_reports_every_iteration(classifier):
    losses = [s.loss for s in classifier.history]
    assert [s.iteration for s in classifier.history] == list(range(1, 26))
    assert losses[-1] < losses[0]
    assert all(0.0 <= s.training_accuracy <= 1.0 and s.validation_accuracy is None for s in classifier.history)


def test_evaluation_equals_metrics_computed_by_hand(classifier, digits):
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    files = _files(digits[1])
    truth = [_label_of(f) for f in files]
    predicted = classifier.predict(files)
    probabilities = classifier.predict_probabilities(files)
    metrics = classifier.evaluation(on=digits[1])
    labels = metrics.labels
    assert metrics.count == len(files)
    assert metrics.accuracy == pytest.approx(np.mean(np.asarray(truth) == np.asarray(predicted)))
    np.testing.assert_array_equal(metrics.confusion, confusion_matrix(truth, predicted, labels=labels))
    p, r, _, _ = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=np.nan)
    np.testing.assert_allclose([metrics.precision[l] for l in labels], p, equal_nan=True)
    np.testing.assert_allclose([metrics.recall[l] for l in labels], r, equal_nan=True)
    wrong = {(f, t, q) for f, t, q in zip(files, truth, predicted) if t != q}
    assert {(m.path, m.label, m.predicted) for m in metrics.misclassified} == wrong
    for m in metrics.misclassified:
        assert m.confidence == pytest.approx(probabilities[files.index(m.path)][m.predicted], rel=1e-5)


def test_predict_takes_paths_and_pil_images(classifier, digits):
    path = _files(digits[1])[0]
    image = Image.open(path)
    assert classifier.predict(path) == classifier.predict(image) == classifier.predict([path])[0]
    probs = classifier.predict_probabilities(image)
    assert set(probs) == set(classifier.labels) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(mlc.MLCParametersError, match="path or a PIL image"):
        classifier.predict(3)


@pytest.mark.parametrize("suffix", [".mlmodel", ".mlpackage"])
def test_export_round_trips_with_the_same_predictions(classifier, digits, tmp_path, suffix, ct):
    path = classifier.write(tmp_path / f"Digits{suffix}", author="tester", description="digits", version="2.1", license="MIT")
    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()  # coremltools reads it
    assert spec.WhichOneof("Type") == "pipelineClassifier"
    assert [f.name for f in spec.description.input] == ["image"]
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert [f.name for f in spec.description.output] == ["classLabel", "classLabelProbs"]
    meta = spec.description.metadata
    assert (meta.author, meta.shortDescription, meta.versionString, meta.license) == ("tester", "digits", "2.1", "MIT")
    assert meta.userDefined["mlc.createml.max_iterations"] == "25"
    model = mlc.load(path)
    files = _files(digits[1])[::7]
    expected = classifier.predict_probabilities(files)
    for f, probs in zip(files, expected):
        out = model.predict({"image": classifier.extractor.fit(load_image(f))})
        assert out["classLabel"] == max(probs, key=probs.get)
        np.testing.assert_allclose([out["classLabelProbs"][l] for l in classifier.labels], [probs[l] for l in classifier.labels], atol=1e-5)


def test_export_writes_nothing_on_a_bad_path(classifier, tmp_path):
    with pytest.raises(mlc.MLCIOError, match=r"\.mlpackage or \.mlmodel"):
        classifier.write(tmp_path / "model.onnx")
    assert os.listdir(tmp_path) == []


def test_updatable_export_can_be_personalised(classifier, digits, tmp_path, ct):
    from mlc.train.nn_spec import read_update_spec

    path = classifier.write(tmp_path / "Digits.mlpackage", updatable=True)
    spec = ct.models.MLModel(path, skip_model_load=True).get_spec()
    assert spec.isUpdatable
    assert {f.name for f in spec.description.trainingInput} == {"image", "classLabel"}
    head = spec.pipelineClassifier.pipeline.models[-1]
    assert head.isUpdatable and not spec.pipelineClassifier.pipeline.models[0].isUpdatable
    update = read_update_spec(head, "head")
    assert update.loss.target == "classLabel" and update.loss.target_is_label
    model = mlc.load(path)
    files = _files(digits[1])[:20]
    images = [classifier.extractor.fit(load_image(f)) for f in files]
    task = mlc.update(model, {"image": images, "classLabel": np.asarray([_label_of(f) for f in files])}, show_progress=False)
    assert task.result.metrics["epochs"] == 10
    updated = task.model
    changed = [k for k in updated.params if not np.array_equal(np.asarray(updated.params[k]), np.asarray(model.params[k]))]
    assert changed and all("classifier" in k for k in changed)  # only the head's innerProduct
    updated.save(tmp_path / "Personal.mlpackage")
    assert mlc.load(tmp_path / "Personal.mlpackage").predict({"image": images[0]})["classLabel"] in classifier.labels


def test_a_second_training_reads_every_feature_from_the_cache(digits, extractor_path, tmp_path, monkeypatch):
    first = ImageClassifier(digits[0], feature_extractor=extractor_path, augmentations="flip", max_iterations=3,
                            show_progress=False, cache_dir=tmp_path)
    assert first.cache.misses == 2 * len(first.training_data) + len(first.validation_data or [])

    def no_extraction(self, images, on_batch=None):
        raise AssertionError("features were extracted again")

    monkeypatch.setattr(FeatureExtractor, "extract", no_extraction)
    second = ImageClassifier(digits[0], feature_extractor=extractor_path, augmentations="flip", max_iterations=5,
                             show_progress=False, cache_dir=tmp_path)
    assert second.cache.misses == 0
    assert second.labels == first.labels


def test_the_cache_follows_file_contents_not_names(digits, extractor_path, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(digits[0], train)
    extractor = FeatureExtractor(extractor_path)
    a = ImageClassifier(train, feature_extractor=extractor, max_iterations=2, show_progress=False, cache_dir=tmp_path / "cache")
    path = _files(train / "0")[0]
    before = a.features([path])[0]
    os.rename(path, path + ".moved.png")
    assert np.array_equal(a.features([path + ".moved.png"])[0], before)
    Image.new("L", (32, 32), 0).save(path + ".moved.png")
    after = a.features([path + ".moved.png"])[0]
    expected = extractor.extract([extractor.fit(load_image(path + ".moved.png"))])[0]
    np.testing.assert_array_equal(after, expected)
    assert not np.array_equal(after, before)


def test_augmentations_add_one_copy_per_training_image(digits, extractor_path):
    c = ImageClassifier(digits[0], feature_extractor=extractor_path, augmentations=["noise", "rotate", "crop"],
                        validation=None, max_iterations=2, show_progress=False, cache_dir=False)
    n = len(c.training_data)
    assert c.augmentations == ("noise", "crop", "rotate")
    assert c.cache.misses == 4 * n  # the originals and three copies, each extracted once
    x = c.features(c.training_data.paths, c.augmentations)
    assert x.shape[0] == 4 * n
    assert not np.allclose(x[:n], x[n : 2 * n])


def test_validation_choices(digits, extractor_path):
    common = dict(feature_extractor=extractor_path, max_iterations=2, show_progress=False, cache_dir=False)
    auto = ImageClassifier(digits[0], **common)  # 240 images: 10% of each label held out
    counts = auto.validation_data.counts()
    assert sum(counts.values()) == pytest.approx(0.1 * 240, abs=10) and set(counts) == set(auto.labels)
    assert len(auto.training_data) + len(auto.validation_data) == 240
    assert auto.history[-1].validation_accuracy is not None and auto.validation_metrics is not None
    fraction = ImageClassifier(digits[0], validation=0.25, **common)
    assert 50 <= len(fraction.validation_data) <= 70
    separate = ImageClassifier(digits[0], validation=digits[1], **common)
    assert len(separate.training_data) == 240 and len(separate.validation_data) == len(_files(digits[1]))
    none = ImageClassifier(digits[0], validation="none", **common)
    assert none.validation_data is None and none.validation_metrics is None


def test_automatic_validation_keeps_small_sets_whole(tmp_path, extractor_path):
    root = write_digits_dataset(tmp_path, size=32, limit_per_class=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mlc.MLCDataWarning)
        c = ImageClassifier(root, feature_extractor=extractor_path, max_iterations=2, show_progress=False, cache_dir=False)
    assert c.validation_data is None and len(c.training_data) == 40


def test_the_seed_makes_training_reproducible(digits, extractor_path):
    common = dict(feature_extractor=extractor_path, augmentations="noise,rotate", max_iterations=4, show_progress=False, cache_dir=False)
    a, b = ImageClassifier(digits[0], seed=3, **common), ImageClassifier(digits[0], seed=3, **common)
    c = ImageClassifier(digits[0], seed=4, **common)
    np.testing.assert_array_equal(a.model.weights, b.model.weights)
    assert a.validation_data.paths == b.validation_data.paths != c.validation_data.paths


def test_mlprogram_extractor_named_by_its_output(digits, tmp_path, ct):
    path = mlprogram_extractor(str(tmp_path / "conv.mlpackage"), size=32)
    with pytest.raises(mlc.MLCParametersError, match="name the one holding the features"):
        ImageClassifier(digits[0], feature_extractor=path, show_progress=False)
    c = ImageClassifier(digits[0], feature_extractor=path, feature_output="features", max_iterations=5, show_progress=False,
                        cache_dir=False)
    out = c.write(tmp_path / "Conv.mlpackage")
    model = mlc.load(out)
    f = _files(digits[1])[0]
    probs = c.predict_probabilities(f)
    got = model.predict({"image": c.extractor.fit(load_image(f))})["classLabelProbs"]
    np.testing.assert_allclose([got[l] for l in c.labels], [probs[l] for l in c.labels], atol=1e-5)
    with pytest.raises(mlc.MLCUnsupportedError, match="write an .mlpackage"):
        c.write(tmp_path / "Conv.mlmodel")
    assert not os.path.exists(tmp_path / "Conv.mlmodel")


def test_corrupt_images_are_skipped_and_reported(digits, extractor_path, tmp_path):
    train = tmp_path / "train"
    shutil.copytree(digits[0], train)
    bad = write_corrupt_files(train / "3")
    with pytest.warns(mlc.MLCDataWarning, match="could not be read as images") as record:
        c = ImageClassifier(train, feature_extractor=extractor_path, max_iterations=2, show_progress=False, cache_dir=False)
    message = " ".join(str(w.message) for w in record)
    assert all(p in message for p in bad)
    assert sorted(p for p, _ in c.skipped_files) == sorted(bad)
    assert not set(bad) & (set(c.training_data.paths) | set(c.validation_data.paths))


def test_evaluation_on_labels_the_classifier_never_saw(classifier, digits, tmp_path):
    test = tmp_path / "test"
    shutil.copytree(os.path.join(digits[1], "1"), test / "1")
    shutil.copytree(os.path.join(digits[1], "2"), test / "seven-ish")
    with pytest.warns(mlc.MLCDataWarning, match="seven-ish"):
        metrics = classifier.evaluation(on=test)
    assert "seven-ish" in metrics.labels
    assert metrics.recall["seven-ish"] == 0.0
    assert sum(m.label == "seven-ish" for m in metrics.misclassified) == len(_files(test / "seven-ish"))


def test_plot_training_writes_a_png(tmp_path, digits, extractor_path):
    c = ImageClassifier(digits[0], feature_extractor=extractor_path, max_iterations=3, show_progress=False, cache_dir=False)
    path = c.plot_training(tmp_path / "curve.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100
    with pytest.raises(mlc.MLCIOError, match="PNG"):
        c.plot_training(tmp_path / "curve.jpg")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"max_iterations": 0}, mlc.MLCParametersError, "max_iterations"),
        ({"max_iterations": 2.5}, mlc.MLCParametersError, "max_iterations"),
        ({"augmentations": "flip,mirror"}, mlc.MLCParametersError, "mirror"),
        ({"validation": 1.5}, mlc.MLCParametersError, "between 0 and 1"),
        ({"validation": True}, mlc.MLCParametersError, "validation"),
        ({"seed": "zero"}, mlc.MLCParametersError, "seed"),
        ({"feature_output": "logits"}, mlc.MLCParametersError, "no output 'logits'"),
        ({"solver": "newton"}, mlc.MLCParametersError, "solver"),
    ],
)
def test_bad_parameters_get_clear_errors(digits, extractor_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        ImageClassifier(digits[0], **{"feature_extractor": extractor_path, "show_progress": False, "cache_dir": False, **kwargs})


def test_bad_sources_and_extractors(tmp_path, extractor_path, ct):
    with pytest.raises(mlc.MLCIOError, match="training data"):
        ImageClassifier(tmp_path / "missing", feature_extractor=extractor_path)
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    b = NeuralNetworkBuilder([("x", datatypes.Array(3))], [("y", datatypes.Array(3))])
    b.add_activation("relu", "RELU", "x", "y")
    ct.models.utils.save_spec(b.spec, str(tmp_path / "notimage.mlmodel"))
    with pytest.raises(mlc.MLCParametersError, match="exactly one input, an image"):
        FeatureExtractor(str(tmp_path / "notimage.mlmodel"))
