"""``classify`` (iOS15 classify.py): marks a classifier; outputs the label and probabilities."""

from mlc.classification import Classification
from mlc.frontends.mil.registry import op


@op("classify", static=("classes",))
def classify(probabilities, classes):
    result = Classification(probabilities, tuple(classes))
    return result, result
