"""``mlc train image-classifier`` and the ``mlc predict`` preview it suggests."""

import json
import os

import pytest

import mlc
from mlc.cli import main
from mlc.testing.extractors import pooling_extractor
from mlc.testing.images import write_corrupt_files, write_digits_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-digits")
    train, test = write_digits_dataset(root, fraction_test=0.25, seed=0, size=32, limit_per_class=12)
    extractor = pooling_extractor(str(root / "pool.mlmodel"), size=32, block=4)
    return train, test, extractor


def _first_image(folder):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs)[0]


def test_train_prints_metrics_and_writes_a_model_that_predicts(data, tmp_path, capsys):
    train, test, extractor = data
    out = tmp_path / "Digits.mlpackage"
    code = main(["train", "image-classifier", train, "--test", test, "--iterations", "10", "--augment", "flip",
                 "--extractor", extractor, "--quiet", "--author", "cli", "--plot", str(tmp_path / "curve.png"), "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "10 iterations" in text and "training metrics" in text and "testing metrics" in text
    assert "confusion matrix" in text and "precision" in text
    assert f"try it: mlc predict {out} --input image=" in text
    assert os.path.isfile(tmp_path / "curve.png")
    model = mlc.load(out)
    assert model.spec.description.metadata.author == "cli"
    image = _first_image(test)
    assert main(["predict", str(out), "--input", f"image={image}"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("classLabel: ") and "classLabelProbs:" in shown


def test_train_json_and_updatable(data, tmp_path, capsys):
    train, test, extractor = data
    out = tmp_path / "Digits.mlmodel"
    code = main(["train", "image-classifier", train, "--test", test, "--iterations", "3", "--extractor", extractor,
                 "--validation", "none", "--updatable", "--json", "--quiet", "-o", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"training", "testing"}
    assert report["testing"]["count"] == sum(len(fs) for _, _, fs in os.walk(test))
    assert mlc.load(out).spec.isUpdatable


def test_corrupt_images_are_warned_on_stderr(data, tmp_path, capsys):
    import shutil

    train, _, extractor = data
    copy = tmp_path / "train"
    shutil.copytree(train, copy)
    bad = write_corrupt_files(copy / "5")
    code = main(["train", "image-classifier", str(copy), "--iterations", "2", "--extractor", extractor, "--quiet",
                 "-o", str(tmp_path / "m.mlmodel")])
    err = capsys.readouterr().err
    assert code == 0
    assert "mlc: warning:" in err and all(p in err for p in bad)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--augment", "flip,sharpen"], "sharpen"),
        (["--iterations", "0"], "max_iterations"),
        (["--validation", "1.5"], "between 0 and 1"),
        (["--extractor-output", "nope"], "no output 'nope'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message_and_write_nothing(data, tmp_path, capsys, extra, message):
    train, _, extractor = data
    out = tmp_path / "m.mlpackage"
    code = main(["train", "image-classifier", train, "--extractor", extractor, "--quiet", "-o", str(out), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_training_folder(tmp_path, capsys):
    code = main(["train", "image-classifier", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m.mlpackage")])
    assert code == 2
    err = capsys.readouterr().err
    assert "mlc: error [io]" in err and "nowhere" in err
