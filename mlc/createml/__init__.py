"""Create ML's workflows on any machine: ``ImageClassifier`` trains an image classifier from a
folder of labelled images on a pretrained feature extractor, evaluates it and writes a Core ML model."""

from mlc.createml.augment import AUGMENTATIONS
from mlc.createml.classifier import ImageClassifier
from mlc.createml.data import ImageDataset, LabeledImage, image_source, load_image
from mlc.createml.extractor import FeatureExtractor
from mlc.createml.metrics import ClassifierMetrics, Misclassification

__all__ = [
    "AUGMENTATIONS",
    "ClassifierMetrics",
    "FeatureExtractor",
    "ImageClassifier",
    "ImageDataset",
    "LabeledImage",
    "Misclassification",
    "image_source",
    "load_image",
]
