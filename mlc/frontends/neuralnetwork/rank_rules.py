"""Core ML's NeuralNetwork rank validation, checked at load.

A port (own Python, no code copied) of the rank rules in apple/coremltools'
``mlmodel/src/Validation/NeuralNetwork/``: ``NeuralNetworkValidator.cpp``
(``validateNeuralNetworkTopLevel``, ``NeuralNetworkSpecValidator::validateNeuralNetwork``),
``NeuralNetworkLayerValidator.cpp`` (the per-layer ``validate*Layer`` functions) and
``NeuralNetworkValidatorUtils.hpp`` (``checkRank``, ``validateRankCount``,
``validateInputOutputRankEquality``, ``validateTensorMessage``, ``validateRankExists``).

Which world (``validateNeuralNetworkTopLevel``): Core ML checks ranks only under its
"ndArrayInterpretation", which holds when the network's array or image input shape mapping is
not the rank-5 default, or when a top-level layer is one added after iOS 12
(``isIOS12NeuralNetworkLayer`` in ``Utils.cpp``). In the legacy rank-5 world every blob is rank 5
and no rank rule applies, so nothing is checked there.

Where ranks come from. Core ML knows a blob's rank from (1) the model description: a
multiarray input's rank is its declared shape's length under ``EXACT_ARRAY_MAPPING`` and 5 under
``RANK5_ARRAY_MAPPING``, an image is rank 5 (``RANK5_IMAGE_MAPPING``) or 4
(``RANK4_IMAGE_MAPPING``); (2) the layers' ``inputTensor`` / ``outputTensor`` messages. mlc adds
(3) ranks propagated through layers whose output rank follows from their input ranks and
parameters (elementwise layers keep rank, ``expandDims`` adds ``len(axes)``, ``reshapeStatic``
gives ``len(targetShape)``...); where it cannot be known statically (``reshapeDynamic``,
``squeeze`` with ``squeezeAll``, custom layers...) the rank is unknown and, as Core ML does with
a blob missing from its rank map, the checks that need it are skipped. Known ranks (1-3) feed
``validateRankCount`` / ``validateInputOutputRankEquality`` and the equal-rank checks, which Core
ML applies to its blob rank map; the axis-versus-rank checks that Core ML applies to a layer's
``inputTensor`` rank (``validateConcatNDLayer``, ``validateReductionTypeLayer``,
``validateExpandDimsLayer``...) use that rank only. Core ML's own ranks win
over propagated ones. Nested networks (``branch``, ``loop``) see a copy of the enclosing ranks
(as Core ML's nested validators do); a blob written inside one has an unknown propagated rank
after it.

Left out, or narrowed:

* the declared ranks of the model's *outputs* (Core ML adds them to its rank map): ``verify_blobs``
  is handed only the network and its input descriptions;
* the rank-exactly-5 rule of the legacy ``reshape`` and ``permute`` layers (``validateReshapeLayer``,
  ``validatePermuteLayer``): mlc runs them on any rank from their input's rank
  (``mlc.frontends.neuralnetwork.shapes``) and its tests run them on rank-3 and rank-4 blobs under
  ``EXACT_ARRAY_MAPPING``; ``reshape``'s output rank is then unknown;
* ``validateNeuralNetworkTopLevel``'s refusal of a rank-5 array mapping next to iOS 13+ layers or a
  non-default image mapping (an interface rule, not a rank rule);
* every non-rank parameter check of the same C++ functions, and ``validateArgsortLayer``'s refusal
  of a negative axis (not a rank rule).
"""

from __future__ import annotations

from mlc._errors import MLCParametersError

# Layers of iOS 12 (specification version 3): ``isIOS12NeuralNetworkLayer`` in Utils.cpp.
_IOS12 = frozenset(
    "convolution innerProduct batchnorm activation pooling padding concat lrn softmax split add multiply unary "
    "upsample bias l2normalize reshape flatten permute reduce loadConstant scale simpleRecurrent gru "
    "uniDirectionalLSTM biDirectionalLSTM crop average max min dot mvn embedding sequenceRepeat reorganizeData "
    "slice custom resizeBilinear cropResize".split()
)

# validateRankCount(min, max) + validateInputOutputRankEquality, gated on ndArrayInterpretation:
# layer field -> (Core ML's type name in its messages, min rank, max rank or -1).
_RANK_COUNT = {
    "convolution": ("Convolution", 4, -1),  # validateConvolutionLayer
    "convolution3d": ("Convolution3D", 5, -1),  # validateConvolution3DLayer
    "innerProduct": ("InnerProduct", 1, 5),  # validateInnerProductLayer
    "batchnorm": ("Batchnorm", 3, -1),  # validateBatchnormLayer
    "pooling": ("Pooling", 4, -1),  # validatePoolingLayer
    "pooling3d": ("Pooling3d", 5, -1),  # validatePooling3dLayer
    "globalPooling3d": ("Pooling3d", 5, -1),  # validateGlobalPooling3dLayer
    "padding": ("Padding", 2, -1),  # validatePaddingLayer
    "lrn": ("LRNLayer", 3, -1),  # validateLRNLayer
    "split": ("Split", 3, -1),  # validateSplitLayer
    "upsample": ("Upsample", 3, -1),  # validateUpsampleLayer
    "bias": ("Bias", 3, -1),  # validateBiasLayer
    "l2normalize": ("L2Normalize", 3, -1),  # validateL2NormLayer
    "flatten": ("Flatten", 3, -1),  # validateFlattenLayer
    "reorganizeData": ("ReorganizeData", 3, -1),  # validateReorganizeDataLayer
    "scale": ("Scale", 3, -1),  # validateScaleLayer
    "simpleRecurrent": ("SimpleRecurrent", 5, 5),  # validateSimpleRecurrentLayer
    "gru": ("GRU", 5, 5),  # validateGRULayer
    "uniDirectionalLSTM": ("UniDirectionalLSTM", 5, 5),  # validateUniDirectionalLSTMLayer
    "biDirectionalLSTM": ("BiDirectionalLSTM", 5, 5),  # validateBiDirectionalLSTMLayer
    "crop": ("Crop", 3, -1),  # validateCropLayer
    "dot": ("DotProduct", 3, -1),  # validateDotLayer
    "mvn": ("MeanVarianceNormalize", 3, -1),  # validateMvnLayer
    "embedding": ("Embedding", 4, -1),  # validateEmbeddingLayer
    "embeddingND": ("EmbeddingND", 2, 5),  # validateEmbeddingNDLayer
    "sequenceRepeat": ("SequenceRepeat", 5, -1),  # validateSequenceRepeatLayer
    "softmax": ("Softmax", 3, -1),  # validateSoftmaxLayer
    "resizeBilinear": ("ResizeBilinear", 3, -1),  # validateResizeBilinearLayer
    "cropResize": ("CropResize", 5, -1),  # validateCropResizeLayer
}

# validateInputOutputRankEquality only (no rank count).
_RANK_EQUAL = {
    "unary": "Unary",  # validateUnaryFunctionLayer (under ndArrayInterpretation)
    "topK": "TopK",  # validateTopKLayer
    "constantPad": "ConstantPad",  # validateConstantPadLayer
    "argSort": "Argsort",  # validateArgsortLayer
}

# "Value of axis must be in the range [-rank(tensor), rank(tensor))" on the first input.
_AXIS_IN_RANGE = (
    "concatND",  # validateConcatNDLayer
    "softmaxND",  # validateSoftmaxNDLayer
    "splitND",  # validateSplitNDLayer
    "flattenTo2D",  # validateFlattenTo2DLayer
    "slidingWindows",  # validateSlidingWindowsLayer
    "topK",  # validateTopKLayer
    "argMax",  # validateArgMaxLayer
    "argMin",  # validateArgMinLayer
)
_REDUCTIONS = ("reduceL1 reduceL2 reduceMax reduceMin reduceSum reduceProd reduceMean reduceLogSum "
               "reduceSumSquare reduceLogSumExp").split()  # validateReductionTypeLayer

# -- output-rank propagation (mlc's, from NeuralNetwork.proto's layer documentation) ------------
_SAME_RANK = frozenset(
    "activation unary softmax softmaxND batchnorm lrn l2normalize mvn bias scale padding upsample resizeBilinear "
    "cropResize convolution convolution3d pooling pooling3d globalPooling3d innerProduct embedding embeddingND "
    "flatten permute reorganizeData crop slice reduce split sequenceRepeat dot copy transpose reverse "
    "reverseSeq clip ceil floor round sign sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh exp2 erf "
    "gelu clampedReLU upperTriangular lowerTriangular matrixBandPart rankPreservingReshape fillLike "
    "randomNormalLike randomUniformLike randomBernoulliLike constantPad layerNormalization cumSum argSort tile "
    "topK splitND gatherAlongAxis scatter scatterND scatterAlongAxis sliceBySize logicalNot".split()
)
_FIRST_OUTPUT_ONLY = frozenset("simpleRecurrent gru uniDirectionalLSTM biDirectionalLSTM".split())
_BROADCAST = frozenset(
    "add multiply average max min addBroadcastable subtractBroadcastable multiplyBroadcastable "
    "divideBroadcastable maxBroadcastable minBroadcastable floorDivBroadcastable modBroadcastable "
    "powBroadcastable equal notEqual lessThan lessEqual greaterThan greaterEqual logicalAnd logicalOr logicalXor "
    "whereBroadcastable broadcastToLike concat concatND".split()
)


def nd_array_interpretation(network, inputs) -> bool:
    """Core ML's "ndArrayInterpretation" (``validateNeuralNetworkTopLevel``): ranks are checked
    when either input shape mapping is not the rank-5 default or a top-level layer is newer
    than iOS 12 (``isIOS12NeuralNetworkLayer``)."""
    if int(network.arrayInputShapeMapping) != 0 or int(network.imageInputShapeMapping) != 0:
        return True
    return any(not _is_ios12(layer) for layer in network.layers)


def _is_ios12(layer) -> bool:
    kind = layer.WhichOneof("layer")
    if kind not in _IOS12:
        return False
    if kind == "convolution":
        return len(layer.input) == 1
    if kind == "innerProduct":
        return not layer.innerProduct.int8DynamicQuantize
    if kind == "upsample":
        p = layer.upsample
        return int(p.linearUpsampleMode) == 0 and len(p.fractionalScalingFactor) == 0
    if kind == "reorganizeData":
        return int(layer.reorganizeData.mode) != 2  # PIXEL_SHUFFLE
    return True


def input_ranks(network, inputs) -> dict[str, int]:
    """The ranks Core ML gives the model's inputs (``ioBlobNameToRank`` in
    ``validateNeuralNetworkTopLevel``); a multiarray without a declared shape is left out."""
    exact = int(network.arrayInputShapeMapping) != 0
    rank4_images = int(network.imageInputShapeMapping) != 0
    ranks = {}
    for name, f in inputs.items():
        if f.kind == "multiArray":
            if not exact:
                ranks[name] = 5
            elif len(f.shape) > 0:
                ranks[name] = len(f.shape)
        elif f.kind == "image":
            ranks[name] = 4 if rank4_images else 5
    return ranks


def verify_ranks(network, inputs, where: str) -> None:
    """Raise ``MLCParametersError`` naming the layer for a network Core ML's rank validation
    refuses (see the module docstring)."""
    if not nd_array_interpretation(network, inputs):
        return
    io = input_ranks(network, inputs)
    world = "EXACT_ARRAY_MAPPING" if int(network.arrayInputShapeMapping) != 0 else "the rank-N (iOS 13+) interpretation"
    checker = _Checker(where, io, world)
    explicit = dict(io)
    origin = {name: f"the model description declares input {name!r} rank {r}" for name, r in io.items()}
    checker.walk(network, explicit, {}, origin)


class _Checker:
    def __init__(self, where: str, io: dict[str, int], world: str):
        self.where = where
        self.io = io
        self.world = world

    # -- the network walk: NeuralNetworkSpecValidator::validateNeuralNetwork --------------------
    def walk(self, network, explicit: dict, derived: dict, origin: dict) -> set[str]:
        """Check every layer in order; ``explicit`` are Core ML's ranks (description, tensor
        messages), ``derived`` mlc's propagated ones. Returns the blobs the network writes."""
        written: set[str] = set()
        for layer in network.layers:
            kind = layer.WhichOneof("layer")
            if kind is None:
                continue
            self.layer = layer
            self.kind = kind
            self.tensor_messages(layer, explicit, origin)
            ranks = _Ranks(explicit, derived, origin)
            self.check_layer(layer, kind, getattr(layer, kind), ranks)
            for field in _NESTED.get(kind, ()):
                params = getattr(layer, kind)
                if params.HasField(field):
                    inner = self.walk(getattr(params, field), dict(explicit), dict(derived), dict(origin))
                    for name in inner:
                        derived.pop(name, None)
                    written |= inner
            outs = _output_ranks(layer, kind, getattr(layer, kind), ranks)
            for name, r in zip(layer.output, outs):
                written.add(name)
                if r is None:
                    derived.pop(name, None)
                else:
                    derived[name] = r
                    if name not in explicit:
                        origin[name] = f"rank {r} follows from layer {layer.name!r} ({kind}) and its inputs"
        return written

    def fail(self, message: str) -> None:
        raise MLCParametersError(f"{self.where}: layer {self.layer.name!r} ({self.kind}): {message}")

    def tensor_messages(self, layer, explicit: dict, origin: dict) -> None:
        """The ``inputTensor`` / ``outputTensor`` checks of ``validateNeuralNetwork`` and
        ``validateTensorMessage``: lengths match the layer's blobs, a tensor's rank matches its
        ``dimValue`` and is positive, a model input's rank matches the description, and a blob's
        rank is the same everywhere it is given."""
        for tensors, names, side in ((layer.inputTensor, layer.input, "input"), (layer.outputTensor, layer.output, "output")):
            if len(tensors) == 0:
                continue
            if len(tensors) != len(names):
                self.fail(f"its {side} and {side}Tensor lists have different lengths ({len(names)} and {len(tensors)})")
            for name, t in zip(names, tensors):
                rank = int(t.rank)
                if len(t.dimValue) > 0:
                    if rank != len(t.dimValue):
                        self.fail(f"{side}Tensor for blob {name!r}: rank {rank} must match the length of dimValue ({len(t.dimValue)})")
                    if rank < 1:
                        self.fail(f"{side}Tensor for blob {name!r}: rank must be positive")
                if name in self.io and rank != self.io[name]:
                    self.fail(
                        f"{side} {name!r} is also an input to the model, but the rank given in the layer ({rank}) "
                        f"does not match the one in the model description ({self.io[name]})"
                    )
                if name in explicit and explicit[name] != rank:
                    self.fail(f"inconsistent rank for the blob {name!r}: {rank} here, {explicit[name]} before ({origin.get(name, '')})")
                if name not in explicit:
                    explicit[name] = rank
                    origin[name] = f"layer {layer.name!r} gives {name!r} rank {rank} in its {side}Tensor"

    # -- per-layer rules: NeuralNetworkLayerValidator.cpp ---------------------------------------
    def check_layer(self, layer, kind: str, p, ranks: "_Ranks") -> None:
        ins, outs = list(layer.input), list(layer.output)
        first_in = ranks.input(ins[0]) if ins else None
        if kind in _RANK_COUNT:
            name, lo, hi = _RANK_COUNT[kind]
            self.rank_equality(ins, outs, ranks, name)
            self.rank_count(ins, outs, ranks, name, lo, hi)
        elif kind == "concat":  # validateConcatLayer
            self.rank_equality(ins, outs, ranks, "Concat")
            self.rank_count(ins, outs, ranks, "Concat", 5 if p.sequenceConcat else 3, -1)
            self.equal_input_ranks(ins, ranks, "Concat", all_inputs=True)
        elif kind == "activation":  # validateActivation: PReLU and ParametricSoftplus only
            which = p.WhichOneof("NonlinearityType")
            if which in ("PReLU", "parametricSoftplus"):
                name = "ActivationPReLU" if which == "PReLU" else "ActivationParametricSoftplus"
                self.rank_equality(ins, outs, ranks, name)
                self.rank_count(ins, outs, ranks, name, 3, -1)
        elif kind in _RANK_EQUAL:
            self.rank_equality(ins, outs, ranks, _RANK_EQUAL[kind])
        if kind == "split":  # validateSplitLayer: all outputs of one rank
            known = [ranks.explicit[o] for o in outs if o in ranks.explicit]
            if outs and outs[0] in ranks.explicit and len(set(known)) > 1:
                self.fail("Core ML's Split layer must have equal ranks for its outputs, but they are not equal")
        if kind in ("crop", "dot", "cropResize") and len(ins) > 1:  # validateCropLayer, validateDotLayer, validateCropResizeLayer
            self.equal_input_ranks(ins[:2], ranks, _RANK_COUNT[kind][0])
        if kind == "topK" and len(outs) > 1 and first_in is not None:  # validateTopKLayer
            r1 = ranks.explicit.get(outs[1])
            if r1 is not None and r1 != first_in:
                self.fail(f"Core ML's TopK layer expects equal ranks for its input and second output, but they are {first_in} and {r1}")
        if kind == "argMax" or kind == "argMin":  # validateArgMaxLayer / validateArgMinLayer
            if not p.removeDim:
                self.rank_equality(ins, outs, ranks, "ArgMax" if kind == "argMax" else "ArgMin")
        if kind == "loadConstant" and outs and outs[0] in ranks.explicit:  # validateLoadConstantLayer
            self.check_rank("LoadConstant", 5, 5, "output", outs[0], ranks.explicit[outs[0]], ranks)
        if kind in ("rangeStatic", "rangeDynamic") and len(layer.outputTensor) > 0:  # validateRange*Layer
            self.check_rank("Range", 1, 1, "output", outs[0], int(layer.outputTensor[0].rank), ranks)
        if kind == "rankPreservingReshape":
            self.check_rank_preserving_reshape(layer, p)
        # The rules below read the layer's inputTensor / outputTensor ranks only, as Core ML does;
        # description and propagated ranks are not used for them: coremltools' own tests show
        # Core ML accepting, e.g., flattenTo2D with axis == rank on a rank-1 model input.
        t_in = [int(t.rank) for t in layer.inputTensor]
        t_out = [int(t.rank) for t in layer.outputTensor]
        if not t_in:
            return
        first_in = t_in[0]
        tout0 = t_out[0] if t_out else None

        def tin(i):
            return t_in[i] if i < len(t_in) else None

        if kind in _AXIS_IN_RANGE:
            self.axis_in_range([int(p.axis)], first_in)
        elif kind in _REDUCTIONS:
            self.axis_in_range([int(a) for a in p.axes], first_in)
        elif kind == "stack":  # validateStackLayer
            r1 = tin(1)
            if r1 is not None and r1 != first_in:
                self.fail(f"shapes of all inputs must match for Core ML's Stack layer; input ranks are {first_in} and {r1}")
            if not -(first_in + 1) <= int(p.axis) < first_in + 1:
                self.fail(f"value of axis ({p.axis}) must be in the range [-rank(tensor), rank(tensor)] for input rank {first_in}")
        elif kind == "reverse":  # validateReverseLayer
            if len(p.reverseDim) != first_in:
                self.fail(f"invalid size of reverse_dim: {len(p.reverseDim)} values for input rank {first_in}")
        elif kind == "argSort":  # validateArgsortLayer
            if 0 <= int(p.axis) and int(p.axis) >= first_in:
                self.fail(f"axis {p.axis} must lie in [0, {first_in}) (the input rank), as Core ML's ArgSort layer requires")
        elif kind == "reduce":  # validateReduceLayer
            need = {0: 3, 1: 2}.get(int(p.axis), 1)  # CHW, HW; C, H, W need 1
            if first_in < need:
                axis = p.DESCRIPTOR.fields_by_name["axis"].enum_type.values_by_number[int(p.axis)].name
                self.fail(
                    f"axis {axis} needs an input of rank {need} at least, it has rank {first_in} (Core ML: the input's "
                    f"rank is smaller than the dimensions provided in the axis parameter)"
                )
        elif kind == "slice":  # validateSliceLayer
            need = {0: 3, 1: 2}.get(int(p.axis), 1)  # CHANNEL, HEIGHT; WIDTH needs 1
            if first_in < need:
                axis = p.DESCRIPTOR.fields_by_name["axis"].enum_type.values_by_number[int(p.axis)].name
                self.fail(
                    f"axis {axis} needs an input of rank {need} at least, it has rank {first_in} (Core ML: the input's "
                    f"rank is smaller than the dimension provided in the axis parameter)"
                )
        elif kind == "expandDims" and tout0 is not None:  # validateExpandDimsLayer
            out = tout0
            if out is not None and first_in + len(p.axes) != out:
                self.fail(f"input rank ({first_in}) plus the length of the axes parameter ({len(p.axes)}) must equal output rank ({out})")
            out = first_in + len(p.axes) if out is None else out
            self.axes_within([int(a) for a in p.axes], out, "output")
        elif kind == "squeeze" and not p.squeezeAll and tout0 is not None:  # validateSqueezeLayer
            out = tout0
            if out is not None and first_in != 1 and out + len(p.axes) != first_in:
                self.fail(f"output rank ({out}) plus the length of the axes parameter ({len(p.axes)}) must equal input rank ({first_in})")
            self.axes_within([int(a) for a in p.axes], first_in, "input")
        elif kind == "batchedMatmul":  # validateBatchedMatmulLayer
            out = tout0
            if out is not None:
                if len(ins) == 2:
                    r1 = tin(1)
                    if r1 is not None and out != max(2, first_in, r1):
                        self.fail(f"given ranks {first_in} and {r1} of the two inputs, output rank {out} is incorrect (expected {max(2, first_in, r1)})")
                elif len(ins) == 1 and out != first_in:
                    self.fail(f"with one input, output and input ranks must be equal, but they are {out} and {first_in}")
        elif kind == "scatter" and len(ins) == 3:  # validateScatterLayer
            r1, r2 = tin(1), tin(2)
            if (r2 is not None and r2 != first_in) or (r1 is not None and r1 != 1):
                self.fail(f"input ranks of Core ML's Scatter layer are invalid ({first_in}, {r1}, {r2}): the container and updates must have one rank and the indices rank 1")
            out = tout0
            if out is not None and out != first_in:
                self.fail(f"output rank {out} of Core ML's Scatter layer does not match the container input's rank {first_in}")

    def check_rank_preserving_reshape(self, layer, p) -> None:
        """``validateRankPreservingReshapeLayer`` with ``validateRankExists``."""
        if len(layer.inputTensor) == 0 or len(layer.outputTensor) == 0:
            self.fail("must have rank specified for its input and output (inputTensor and outputTensor)")
        r_in, r_out = int(layer.inputTensor[0].rank), int(layer.outputTensor[0].rank)
        if r_in != r_out:
            self.fail(f"input and output rank must be equal ({r_in} and {r_out})")
        if len(p.targetShape) and r_in != len(p.targetShape):
            self.fail(f"input rank ({r_in}) must be the same as the length of the target shape ({len(p.targetShape)})")

    # -- the helpers of NeuralNetworkValidatorUtils.hpp -----------------------------------------
    def check_rank(self, type_name, lo, hi, side, blob, rank, ranks) -> None:
        """``checkRank``."""
        how = ranks.origin.get(blob, "")
        tail = f" (blob {blob!r}: {how})" if how else f" (blob {blob!r})"
        if hi > 0 and hi == lo and rank != hi:
            self.fail(f"{side} rank {rank} but Core ML's {type_name} layer expects rank exactly {lo} under {self.world}{tail}")
        elif lo > 0 and rank < lo:
            self.fail(f"{side} rank {rank} is less than the minimum {lo} Core ML's {type_name} layer requires under {self.world}{tail}")
        elif hi > 0 and rank > hi:
            self.fail(f"{side} rank {rank} is more than the maximum {hi} Core ML's {type_name} layer allows under {self.world}{tail}")

    def rank_count(self, ins, outs, ranks, type_name, lo, hi) -> None:
        """``validateRankCount``: the first input's and the first output's rank in [lo, hi]."""
        if ins:
            r = ranks.input(ins[0])
            if r is not None:
                self.check_rank(type_name, lo, hi, "input", ins[0], r, ranks)
        if outs and outs[0] in ranks.explicit:
            self.check_rank(type_name, lo, hi, "output", outs[0], ranks.explicit[outs[0]], ranks)

    def rank_equality(self, ins, outs, ranks, type_name) -> None:
        """``validateInputOutputRankEquality``: first input and first output of one rank."""
        if not ins or not outs:
            return
        r_in = ranks.input(ins[0])
        r_out = ranks.explicit.get(outs[0])
        if r_in is not None and r_out is not None and r_in != r_out:
            self.fail(
                f"Core ML's {type_name} layer expects equal ranks for its input and output, but input {ins[0]!r} "
                f"has rank {r_in} and output {outs[0]!r} rank {r_out}"
            )

    def equal_input_ranks(self, ins, ranks, type_name, all_inputs: bool = False) -> None:
        """The "expects equal ranks for its inputs" checks (Concat, Crop, DotProduct, CropResize)."""
        first = ranks.input(ins[0]) if ins else None
        if first is None:
            return
        for name in ins[1:]:
            r = ranks.input(name)
            if r is not None and r != first:
                self.fail(f"Core ML's {type_name} layer expects equal ranks for its inputs, but {ins[0]!r} has rank {first} and {name!r} rank {r}")

    def axis_in_range(self, axes, rank) -> None:
        for a in axes:
            if not -rank <= a < rank:
                self.fail(
                    f"axis {a} is out of range for an input of rank {rank}: Core ML requires the value of axis "
                    f"to be in the range [-rank(tensor), rank(tensor)) = [{-rank}, {rank})"
                )

    def axes_within(self, axes, rank, side) -> None:
        """The normalized-axes checks of ``validateExpandDimsLayer`` / ``validateSqueezeLayer``."""
        if not axes:
            return
        seen = []
        for a in axes:
            n = a + rank if a < 0 else a
            if n in seen:
                self.fail(f"axes parameter list cannot have the same value more than once (axes {list(axes)}, {side} rank {rank})")
            seen.append(n)
        if max(seen) > rank - 1 or min(seen) < 0:
            self.fail(f"axes {list(axes)} refer to a dimension that exceeds the {side} rank {rank}")


_NESTED = {"branch": ("ifBranch", "elseBranch"), "loop": ("conditionNetwork", "bodyNetwork")}


class _Ranks:
    """A layer's view of the ranks: Core ML's (``explicit``) first, then mlc's propagated ones."""

    def __init__(self, explicit: dict, derived: dict, origin: dict):
        self.explicit = explicit
        self.derived = derived
        self.origin = origin

    def input(self, name: str):
        r = self.explicit.get(name)
        return r if r is not None else self.derived.get(name)


def _output_ranks(layer, kind: str, p, ranks: _Ranks) -> list:
    """The propagated rank of each output (None: unknown)."""
    n = len(layer.output)
    ins = [ranks.input(name) for name in layer.input]
    r0 = ins[0] if ins else None
    unknown = [None] * n
    if kind in _SAME_RANK:
        return [r0] * n
    if kind in _FIRST_OUTPUT_ONLY:
        return [r0] + [None] * (n - 1)
    if kind in _BROADCAST:
        if not ins or any(r is None for r in ins):
            return unknown
        return [max(ins)] * n
    one = None
    if kind == "expandDims":
        one = r0 + len(p.axes) if r0 is not None else None
    elif kind == "squeeze":
        if not p.squeezeAll and r0 is not None:  # every axis removed: rank 0 (layers/shape_nd.py), left unknown
            one = 1 if r0 == 1 else (r0 - len(p.axes) if r0 - len(p.axes) >= 1 else None)
    elif kind == "reshapeStatic":
        one = len(p.targetShape) or None
    elif kind == "reshapeLike":
        one = ins[1] if len(ins) > 1 else None
    elif kind == "flattenTo2D":
        one = 2
    elif kind in _REDUCTIONS:
        if p.keepDims:
            one = r0
        elif p.reduceAll or r0 == 1:
            one = 1
        elif r0 is not None and len(p.axes):
            one = max(1, r0 - len(set(int(a) % r0 for a in p.axes)))
    elif kind in ("argMax", "argMin"):
        if r0 is not None:
            one = r0 if not p.removeDim or r0 == 1 else r0 - 1
    elif kind in ("stack", "slidingWindows", "oneHot"):
        one = r0 + 1 if r0 is not None else None
    elif kind == "whereNonZero":
        one = 2
    elif kind in ("getShape", "rangeStatic", "rangeDynamic"):
        one = 1
    elif kind == "loadConstantND":
        one = len(p.shape) or None
    elif kind in ("fillStatic", "randomNormalStatic", "randomUniformStatic", "randomBernoulliStatic"):
        one = len(p.outputShape) if hasattr(p, "outputShape") else len(p.targetShape)
        one = one or None
    elif kind == "broadcastToStatic":
        one = max(r0, len(p.targetShape)) if r0 is not None else None
    elif kind == "sliceStatic":
        if r0 is not None:
            squeezed = sum(bool(m) for m in p.squeezeMasks)
            one = r0 - squeezed if r0 - squeezed >= 1 else None
    elif kind == "sliceDynamic":
        if r0 is not None and len(layer.input) < 7:
            squeezed = sum(bool(m) for m in p.squeezeMasks)
            one = r0 - squeezed if r0 - squeezed >= 1 else None
    elif kind == "gather":
        if r0 is not None and len(ins) > 1 and ins[1] is not None and r0 + ins[1] - 1 >= 1:
            one = r0 + ins[1] - 1
    elif kind == "batchedMatmul":
        if len(ins) == 1:
            one = r0
        elif len(ins) == 2 and r0 is not None and ins[1] is not None and r0 >= 2 and ins[1] >= 2:
            one = max(r0, ins[1])
    if n == 0:
        return []
    return [one] + [None] * (n - 1)
