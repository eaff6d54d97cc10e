"""Small feature extractors for tests: Core ML models with one image input, quick to run.

``pooling_extractor`` is a NeuralNetwork that average-pools a small image into blocks and
flattens them (the pixels at a coarser grid: enough for digits). ``mlprogram_extractor`` is an
ML Program (converted from torch) with a fixed random convolution, global pooling and a second
output, so an extractor must be named by its output.
"""

from __future__ import annotations


def pooling_extractor(path: str, *, size: int = 32, block: int = 4, grayscale: bool = False) -> str:
    """Write a NeuralNetwork ``image (size x size) -> features (C * (size/block)**2,)`` to ``path`` (.mlmodel)."""
    from coremltools.models import datatypes
    from coremltools.models.neural_network import NeuralNetworkBuilder

    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    channels = 1 if grayscale else 3
    cells = size // block
    n = channels * cells * cells
    builder = NeuralNetworkBuilder(
        [("image", datatypes.Array(channels, size, size))], [("features", datatypes.Array(n))], disable_rank5_shape_mapping=False
    )
    builder.add_pooling("pool", height=block, width=block, stride_height=block, stride_width=block, layer_type="AVERAGE",
                        padding_type="VALID", input_name="image", output_name="pooled")
    builder.add_flatten("flatten", mode=0, input_name="pooled", output_name="features")
    builder.set_pre_processing_parameters(image_input_names=["image"], is_bgr=False, image_scale=1.0 / 255.0)
    ct.models.utils.save_spec(builder.spec, path)
    return path


def mlprogram_extractor(path: str, *, size: int = 32, features: int = 16, seed: int = 0) -> str:
    """Write an ML Program ``image -> features (features,), stats (2,)`` to ``path`` (.mlpackage)."""
    import torch

    from mlc.io.proto import import_coremltools

    ct = import_coremltools()
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, features, 3, stride=2, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv(x)).mean(dim=(2, 3)).reshape(-1)
            return y, torch.stack([x.mean(), x.std()])

    example = torch.rand(1, 3, size, size)
    traced = torch.jit.trace(Net().eval(), example)
    model = ct.convert(
        traced,
        inputs=[ct.ImageType(name="image", shape=example.shape, scale=1.0 / 255.0)],
        outputs=[ct.TensorType(name="features"), ct.TensorType(name="stats")],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS15,
    )
    model.save(path)
    return path
