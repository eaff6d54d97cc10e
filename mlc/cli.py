"""The ``mlc`` command: ``info``, ``predict``, ``update``, ``train``, ``demo`` and the registry listings."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from mlc.deploy.formats import IMAGE_SUFFIXES, jsonable

DEMO_MODEL = os.path.join(os.path.dirname(__file__), "data", "ColorNet.mlpackage")
DEMO_IMAGE = os.path.join(os.path.dirname(__file__), "data", "red_ball.png")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlc",
        description="Run Apple Core ML models (.mlpackage, .mlmodel) anywhere JAX runs.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="describe a model and list the ops mlc cannot run, without running it")
    info.add_argument("model", help="path to a .mlpackage or .mlmodel")
    info.add_argument("--function", help="function of a multifunction package (default: the model's default)")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--cost", action="store_true",
                      help="also trace the model and report FLOPs and bytes per op family from XLA's cost analysis")

    pred = sub.add_parser("predict", help="run a model on inputs given as files or values")
    pred.add_argument("model", help="path to a .mlpackage or .mlmodel")
    pred.add_argument(
        "--input",
        "-i",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an input: NAME=file.npy, NAME=image.png (or .jpg, ...), or NAME=<JSON number or list>; repeat per input",
    )
    pred.add_argument("--function", help="function of a multifunction package")
    pred.add_argument("--device", help="cpu, gpu or tpu (default: JAX's default device)")
    pred.add_argument("--compute-precision", default="auto", choices=["auto", "float32", "float16"])
    pred.add_argument("--json", action="store_true", help="print outputs as JSON")
    pred.add_argument("--save", metavar="OUT.npz", help="also write the array outputs to an .npz file")

    upd = sub.add_parser("update", help="update (personalise) an updatable model on training data, as Core ML's MLUpdateTask")
    upd.add_argument("model", help="path to an updatable .mlmodel or .mlpackage (NeuralNetwork or kNN)")
    upd.add_argument("--data", required=True, metavar="DATA.npz",
                     help="training data: one array per training input, examples along the first axis (labels as strings or ints)")
    upd.add_argument("-o", "--output", required=True, metavar="OUT.mlmodel", help="where to write the updated model (.mlmodel or .mlpackage)")
    upd.add_argument("--epochs", type=int, help="override the model's epochs (within the values it allows)")
    upd.add_argument("--learning-rate", type=float, help="override the optimizer's learning rate (within its allowed range)")
    upd.add_argument("--mini-batch-size", type=int, help="override the mini-batch size (within the values it allows)")
    upd.add_argument("--seed", type=int, help="override the shuffle seed")
    upd.add_argument("--quiet", action="store_true", help="no progress bar")

    comp = sub.add_parser(
        "compile",
        help="compile a model ahead of time into a .mlc file that loads and runs without coremltools (as Core ML compiles .mlmodelc)",
    )
    comp.add_argument("model", help="path to a .mlpackage or .mlmodel")
    comp.add_argument("-o", "--output", required=True, metavar="MODEL.mlc", help="where to write the compiled model")
    comp.add_argument("--function", help="function of a multifunction package (default: the model's default)")
    comp.add_argument("--platform", metavar="LIST", help="comma-separated platforms to compile for: cpu,cuda,tpu (default: all three, else this machine's)")
    comp.add_argument("--compute-precision", default="auto", choices=["auto", "float32", "float16"],
                      help="auto computes fp16 programs in fp32 on CPU (the default on this machine)")
    comp.add_argument("--no-batch", action="store_true", help="leave out the batched version (predict_batch)")

    dec = sub.add_parser(
        "decompile",
        help="turn a compiled .mlmodelc folder back into an editable model (.mlpackage for ML Programs, else .mlmodel)",
    )
    dec.add_argument("model", help="path to a compiled .mlmodelc folder")
    dec.add_argument("-o", "--output", metavar="OUT.mlpackage",
                     help="where to write it (default: beside the folder, Name.mlpackage or Name.mlmodel)")

    _train_parser(sub)

    srv = sub.add_parser("serve", help="serve models over the Open Inference Protocol (KServe v2): HTTP/REST and gRPC, with dynamic batching")
    srv.add_argument("model", metavar="MODEL_OR_REPOSITORY",
                     help="a .mlpackage/.mlmodel/.mlmodelc/.mlc, or a repository folder: <name>/<version>/<model file>")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000; 0 picks a free one)")
    srv.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 picks a free one; -1 no gRPC)")
    srv.add_argument("--device", default=None,
                     help="device(s) to run on, comma-separated (cpu, gpu, gpu:1, ...): one worker each (default: JAX's default)")
    srv.add_argument("--max-batch-size", type=int, default=64, help="most requests computed as one batch (1: no batching; default 64)")
    srv.add_argument("--max-queue-delay-ms", type=float, default=5.0,
                     help="how long the first request of a batch waits for others (default 5 ms)")
    srv.add_argument("--max-queue", type=int, default=1024,
                     help="requests a model holds before it answers 503 (default 1024)")
    srv.add_argument("--max-body-bytes", type=int, default=64 << 20, help="largest request body (default 64 MiB; larger: 413)")
    srv.add_argument("--no-warmup", action="store_true", help="do not compile at start (the first requests compile)")
    srv.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for requests in flight (default 30)")

    sub.add_parser("ops", help="list the MIL ops mlc lowers, with the opset each lowering starts at")
    sub.add_parser("layers", help="list the NeuralNetwork layer types mlc lowers")
    sub.add_parser("types", help="list the classic Core ML model types mlc runs, and those it refuses")
    sub.add_parser("demo", help="classify the image that ships with mlc using the bundled ColorNet model")
    return p


def _train_parser(sub) -> None:
    train = sub.add_parser("train", help="train a model from data, as Create ML does")
    kinds = train.add_subparsers(dest="task", required=True, metavar="TASK")
    ic = kinds.add_parser(
        "image-classifier",
        help="train an image classifier from a folder of label subfolders (Create ML's MLImageClassifier)",
        description="Extract features with a pretrained network (EfficientNet-Lite0 unless --extractor), fit a "
        "multinomial logistic regression, print the metrics and write a Core ML model.",
    )
    ic.add_argument("train_dir", metavar="TRAIN_DIR", help="a folder whose subfolders are the labels, each holding images")
    ic.add_argument("-o", "--output", required=True, metavar="MODEL.mlpackage", help="where to write the model (.mlpackage or .mlmodel)")
    ic.add_argument("--test", metavar="TEST_DIR", help="a testing folder laid out like TRAIN_DIR, evaluated after training")
    ic.add_argument("--iterations", type=int, default=25, help="maximum solver iterations (default 25)")
    ic.add_argument("--augment", default="", metavar="NAMES", help="comma-separated: noise,blur,crop,exposure,flip,rotate")
    ic.add_argument("--validation", default="auto", metavar="auto|none|FRACTION|DIR",
                    help="validation data: auto (default), none, a fraction of the training images, or a folder")
    ic.add_argument("--seed", type=int, default=0, help="seed of the validation split and the augmentations (default 0)")
    ic.add_argument("--extractor", metavar="MODEL", help="a Core ML model with one image input to use as feature extractor")
    ic.add_argument("--extractor-output", metavar="NAME", help="the extractor's feature output (needed when it has several)")
    ic.add_argument("--device", help="where to extract features: cpu, gpu or tpu (default: JAX's default)")
    ic.add_argument("--updatable", action="store_true", help="make the classifier head updatable (for mlc update / MLUpdateTask)")
    ic.add_argument("--author", help="the model's author metadata (default: your user name)")
    ic.add_argument("--description", help="the model's short description")
    ic.add_argument("--version", default="1.0", help="the model's version string (default 1.0)")
    ic.add_argument("--license", help="the model's license metadata")
    ic.add_argument("--plot", metavar="CURVE.png", help="also write the accuracy per iteration as a PNG")
    ic.add_argument("--json", action="store_true", help="print the metrics as JSON instead of tables")
    ic.add_argument("--quiet", action="store_true", help="no progress bars")


def _validation_arg(text: str):
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        return float(text)
    except ValueError:
        return text  # a folder


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"mlc: warning: {message}", file=sys.stderr)


def _train(args) -> int:
    import warnings

    from mlc.createml import ImageClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _print_warning  # restored by catch_warnings
        classifier = ImageClassifier(
            args.train_dir, max_iterations=args.iterations, augmentations=args.augment, validation=_validation_arg(args.validation),
            seed=args.seed, feature_extractor=args.extractor, feature_output=args.extractor_output, device=args.device,
            show_progress=not args.quiet,
        )
        testing = classifier.evaluation(on=args.test) if args.test else None
    path = classifier.write(args.output, author=args.author, description=args.description, version=args.version,
                            license=args.license, updatable=args.updatable)
    if args.plot:
        classifier.plot_training(args.plot)
    reports = [("training", classifier.training_metrics), ("validation", classifier.validation_metrics), ("testing", testing)]
    if args.json:
        print(json.dumps({name: m.to_dict() for name, m in reports if m is not None}, indent=2))
    else:
        last = classifier.history[-1]
        validation = "" if last.validation_accuracy is None else f", validation accuracy {last.validation_accuracy:.1%}"
        print(f"trained on {len(classifier.training_data)} images of {len(classifier.labels)} labels, "
              f"{len(classifier.history)} iterations: loss {last.loss:.4f}, training accuracy {last.training_accuracy:.1%}{validation}")
        for name, metrics in reports:
            if metrics is not None:
                print(f"\n{name} metrics ({metrics.count} images):\n{metrics.table()}")
        print(f"\nwrote {path}")
        image = _an_image(args.test or args.train_dir)
        print(f"try it: mlc predict {path} --input image={image or 'photo.jpg'}")
    return 0


def _an_image(folder: str) -> str | None:
    """The first image file under ``folder`` (for the preview command line)."""
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                return os.path.join(root, name)
    return None


def _ops(args) -> int:
    from mlc.frontends.mil.registry import OPSET_TARGETS, lowerings

    for name, defs in lowerings().items():
        targets = ", ".join(f"{OPSET_TARGETS[d.since]}+" for d in defs)
        print(f"{name:40s} {targets}")
    return 0


def _layers(args) -> int:
    from mlc.frontends.neuralnetwork.registry import supported_layers

    for name in supported_layers():
        print(name)
    return 0


def _types(args) -> int:
    from mlc.frontends.classic.registry import PROPRIETARY, supported

    for name in supported():
        print(name)
    for name, framework in PROPRIETARY.items():
        print(f"{name:28s} refused: relies on {framework}")
    return 0


# -- info ---------------------------------------------------------------------------------------


def _compiled_info(args) -> int:
    """``mlc info Model.mlc``: what the compiled file holds, read from its header alone."""
    from mlc import features as F
    from mlc._errors import MLCUnsupportedError
    from mlc.io.mlc_file import MLCFile

    if getattr(args, "cost", False):
        raise MLCUnsupportedError(f"{args.model}: --cost analyses a Core ML model; run it on the .mlpackage or .mlmodel the file was compiled from")
    h = MLCFile(args.model).header
    inputs = F.FeatureDescriptions.from_json(h.get("inputs"), f"{args.model}: inputs")
    outputs = F.FeatureDescriptions.from_json(h.get("outputs"), f"{args.model}: outputs")
    report = {
        "model": args.model,
        "type": f"compiled {h.get('kind')}",
        "compiled_from": h.get("name"),
        "platforms": h.get("platforms"),
        "batched": h.get("batched"),
        "jax_version": h.get("jax_version"),
        "created": h.get("created"),
        "short_description": h.get("short_description"),
        "inputs": {n: f.type_string() for n, f in inputs.items()},
        "outputs": {n: f.type_string() for n, f in outputs.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.model}: {report['type']}, compiled from {report['compiled_from']} with JAX {report['jax_version']} ({report['created']})")
    print(f"  platforms: {', '.join(report['platforms'] or [])}; batched: {'yes' if report['batched'] else 'no'}")
    print("inputs:")
    for f in inputs.values():
        print(f"  {f}")
    print("outputs:")
    for f in outputs.values():
        print(f"  {f}")
    return 0


def _info(args) -> int:
    from mlc.io.mlc_file import is_mlc_file
    from mlc.program.build import describe

    if is_mlc_file(args.model):
        return _compiled_info(args)
    summary = describe(args.model, function_name=args.function)
    interface = summary.interface
    report = {
        "model": args.model,
        "type": summary.kind,
        "specification_version": summary.specification_version,
        "short_description": summary.short_description,
        "functions": list(interface.functions),
        "function": interface.function_name,
        "inputs": {n: f.type_string() for n, f in interface.inputs.items()},
        "outputs": {n: f.type_string() for n, f in interface.outputs.items()},
        "ops": summary.op_histogram,
        "unsupported_ops": summary.unsupported,
    }
    if args.json:
        if args.cost:
            from mlc.deploy.cost import cost_report

            report["cost"] = cost_report(args.model, function_name=args.function).to_dict()
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.model}: {summary.kind}, specification version {summary.specification_version}")
    if report["short_description"]:
        print(f"  {report['short_description']}")
    if len(interface.functions) > 1:
        print(f"functions: {', '.join(interface.functions)} (showing {interface.function_name!r})")
    print("inputs:")
    for f in interface.inputs.values():
        print(f"  {f}")
    print("outputs:")
    for f in interface.outputs.values():
        print(f"  {f}")
    total = sum(summary.op_histogram.values())
    unit = "layers" if summary.kind.startswith("neuralNetwork") else "ops" if summary.kind.startswith("mlProgram") else "model types"
    print(f"{unit} ({total}):")
    for name, count in summary.op_histogram.items():
        flag = "   <- not supported" if name in summary.unsupported else ""
        print(f"  {count:6d}  {name}{flag}")
    if summary.unsupported:
        print(f"unsupported {unit}: {', '.join(summary.unsupported)}")
    else:
        print(f"unsupported {unit}: none")
    if args.cost:
        from mlc.deploy.cost import cost_report

        print(cost_report(args.model, function_name=args.function).table())
    return 0


# -- predict ------------------------------------------------------------------------------------


def _parse_input(text: str, features) -> tuple[str, Any]:
    from mlc._errors import MLCFeatureTypeError, MLCIOError

    name, sep, value = text.partition("=")
    if not sep or not name:
        raise MLCFeatureTypeError(f"--input {text!r}: expected NAME=VALUE")
    feature = features.get(name)
    if value.lower().endswith(".npy"):
        try:
            return name, np.load(value, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise MLCIOError(f"--input {name}: cannot read {value!r}: {e}") from e
    if value.lower().endswith(IMAGE_SUFFIXES) or (feature is not None and feature.kind == "image" and os.path.isfile(value)):
        from PIL import Image

        try:
            image = Image.open(value)
            image.load()
        except OSError as e:
            raise MLCIOError(f"--input {name}: cannot read image {value!r}: {e}") from e
        if feature is not None and feature.kind == "image":
            from mlc.features import fit_image

            image = fit_image(image, feature)
        return name, image
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        if feature is not None and feature.kind == "string":
            return name, value
        raise MLCFeatureTypeError(f"--input {name}: {value!r} is neither a .npy file, an image, nor a JSON value") from None
    if feature is not None and feature.kind == "dictionary" and feature.key_kind == "int64" and isinstance(parsed, dict):
        try:
            return name, {int(k): v for k, v in parsed.items()}
        except ValueError:
            raise MLCFeatureTypeError(f"--input {name}: the dictionary's keys must be integers") from None
    if feature is not None and feature.kind in ("int64", "double", "string", "dictionary", "sequence"):
        return name, parsed
    return name, np.asarray(parsed, dtype=feature.dtype if feature is not None and feature.dtype is not None else None)


def _show(name: str, value: Any) -> str:
    if isinstance(value, dict):
        top = sorted(value.items(), key=lambda kv: -kv[1])
        lines = [f"{name}:"] + [f"  {k}: {v:.4f}" for k, v in top]
        return "\n".join(lines)
    if isinstance(value, np.ndarray):
        with np.printoptions(precision=5, threshold=20, edgeitems=3, suppress=True):
            return f"{name}: {value.dtype} {list(value.shape)}\n{value}"
    return f"{name}: {value}"


def _predict(args) -> int:
    import mlc

    model = mlc.load(args.model, function_name=args.function, device=args.device, compute_precision=args.compute_precision)
    inputs = dict(_parse_input(text, model.input_description) for text in args.input)
    outputs = model.predict(inputs)
    if args.save:
        arrays = {k: v for k, v in outputs.items() if isinstance(v, np.ndarray)}
        from mlc.io.atomic import atomic_write

        with atomic_write(args.save) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    if args.json:
        print(json.dumps({k: jsonable(v) for k, v in outputs.items()}, indent=2))
    else:
        for name, value in outputs.items():
            print(_show(name, value))
    return 0


def _load_npz(path: str) -> dict:
    from mlc._errors import MLCIOError

    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise MLCIOError(f"--data {path!r}: cannot read it as an .npz file of arrays: {e}") from e


def _update(args) -> int:
    import mlc

    overrides = {k: v for k, v in (("epochs", args.epochs), ("learning_rate", args.learning_rate),
                                   ("mini_batch_size", args.mini_batch_size), ("seed", args.seed)) if v is not None}
    data = _load_npz(args.data)
    task = mlc.update(args.model, data, show_progress=not args.quiet, **overrides)
    task.model.save(args.output)
    metrics = task.result.metrics
    loss = f", final epoch loss {metrics['loss']:.6g}" if metrics.get("loss") is not None else ""
    epochs = f"{metrics['epochs']} epoch(s) on " if "epochs" in metrics else ""
    print(f"updated {args.model}: {epochs}{metrics['examples']} examples{loss}")
    print(f"wrote {args.output}")
    return 0


def _compile(args) -> int:
    import mlc
    from mlc.deploy.aot import check_output_path, compile_model

    check_output_path(args.output)  # before the model is loaded
    platforms = tuple(p.strip() for p in args.platform.split(",") if p.strip()) if args.platform else None
    model = mlc.load(args.model, function_name=args.function, compute_precision=args.compute_precision)
    report = compile_model(model, args.output, platforms=platforms, batched=not args.no_batch)
    batched = ", batched" if report.batched else ""
    print(f"wrote {report.path} ({report.bytes / 1e6:.1f} MB; {', '.join(report.platforms)}{batched})")
    return 0


def _decompile(args) -> int:
    from mlc.deploy.decompile import decompile

    report = decompile(args.model, args.output)
    print(f"wrote {report.path} ({report.kind}, specification version {report.specification_version}, {report.bytes / 1e6:.1f} MB)")
    return 0


def _demo(args) -> int:
    print(f"$ mlc predict {DEMO_MODEL} --input image={DEMO_IMAGE}")
    args.model, args.input = DEMO_MODEL, [f"image={DEMO_IMAGE}"]
    args.function = args.device = args.save = None
    args.compute_precision, args.json = "auto", False
    return _predict(args)


def _serve(args) -> int:
    from mlc._errors import MLCParametersError
    from mlc.serve import ServeConfig, serve

    for flag, value in (("--max-batch-size", args.max_batch_size), ("--max-queue", args.max_queue), ("--max-body-bytes", args.max_body_bytes)):
        if value < 1:
            raise MLCParametersError(f"{flag} must be at least 1, got {value}")
    if args.max_queue_delay_ms < 0:
        raise MLCParametersError(f"--max-queue-delay-ms must be >= 0, got {args.max_queue_delay_ms}")
    devices = tuple(d.strip() for d in args.device.split(",")) if args.device else (None,)
    serve(ServeConfig(
        args.model, host=args.host, port=args.port, grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        devices=devices, max_batch_size=args.max_batch_size, max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue, max_body_bytes=args.max_body_bytes, warmup=not args.no_warmup,
        drain_timeout=args.drain_timeout,
    ))
    return 0


def main(argv: list[str] | None = None) -> int:
    from mlc._errors import MLCError

    args = _parser().parse_args(argv)
    handler = {"info": _info, "predict": _predict, "compile": _compile, "decompile": _decompile, "update": _update, "train": _train, "ops": _ops, "layers": _layers, "types": _types, "demo": _demo, "serve": _serve}[args.command]
    try:
        return handler(args)
    except MLCError as e:
        print(f"mlc: error [{e.code}]: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
