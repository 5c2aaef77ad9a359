"""Command line: train a network on MNIST and save it, evaluate a saved one, read your
own digits with it, or export it to ONNX.

::

    # the recommended settings of each model
    python -m cnn train --model deep --out deep.npz
    python -m cnn train --model simple --epochs 2 --limit 5000 --out small.npz
    python -m cnn evaluate deep.npz
    # images of digits, prepared as MNIST's were (cnn.prepare_digit)
    python -m cnn predict deep.npz digit.png photo.jpg
    # for ONNX Runtime and other ONNX runtimes (needs pip install "cnn[onnx]")
    python -m cnn export deep.npz deep.onnx

Exit codes: 0 success, 1 training failed (diverged), 2 bad arguments, a missing or
invalid model file, an image that cannot be read as a digit (the other images are still
predicted), or a model that cannot be exported (or onnx not installed), 130
interrupted.
"""

import argparse
import collections
import sys
from pathlib import Path

import numpy as np

from .augment import train_with_augmentation
from .data import DataIntegrityError, load_mnist_prepared
from .digits import DigitImageError, prepare_digit
from .io import ModelFileError, load_model, save_model
from .layers import Dropout
from .networks import DEEP_CNN_TRAINING, SimpleCNN, deep_cnn, two_conv_net
from .onnx_export import OPSET, UnsupportedLayerError, export_onnx
from .train import evaluate

#: For each model: the function that builds it (from ``seed`` and, optionally,
#: ``learning_rate``) and its default epochs and batch size. The default learning rate
#: is the model's own.
MODELS = {
    "simple": (SimpleCNN, 10, 32),
    "two_conv": (two_conv_net, 5, 32),
    "deep": (deep_cnn, DEEP_CNN_TRAINING["epochs"], DEEP_CNN_TRAINING["batch_size"]),
}


def _positive(convert):
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {convert.__name__}, got {text!r}"
            ) from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {convert.__name__}"
    return parse


def build_parser():
    """The argument parser of ``python -m cnn`` (its ``--help`` texts document every
    option)."""
    parser = argparse.ArgumentParser(
        prog="python -m cnn",
        description=(
            "Train convolutional networks on MNIST with NumPy, evaluate them, read "
            "your own images of digits with them, and export them to ONNX."
        ),
        epilog="examples:\n  python -m cnn train --model deep --out deep.npz\n"
        "  python -m cnn train --model simple --epochs 2 --limit 5000 --out small.npz\n"
        "  python -m cnn evaluate deep.npz\n"
        "  python -m cnn predict deep.npz digit.png photo.jpg\n"
        "  python -m cnn export deep.npz deep.onnx\n\n"
        "run 'python -m cnn train --help' for the training options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate,predict,export}"
    )

    train = commands.add_parser(
        "train",
        help="train a network on MNIST and save it",
        description="Train a network on the MNIST training images, print its test "
        "accuracy and save it. Defaults depend on the model: "
        + "; ".join(
            f"{name}: {e} epochs, batch size {b}" for name, (_, e, b) in MODELS.items()
        )
        + ".",
    )
    train.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="simple",
        help="simple: the activity's SimpleCNN; "
        "two_conv: Conv-ReLU-Conv-ReLU-MaxPool-FC; "
        "deep: two stages of Conv-BatchNorm-ReLU with dropout (default: simple)",
    )
    train.add_argument(
        "--epochs",
        type=_positive(int),
        metavar="N",
        help="passes over the training data",
    )
    train.add_argument(
        "--batch-size",
        type=_positive(int),
        metavar="B",
        help="images per gradient step",
    )
    train.add_argument(
        "--learning-rate",
        type=_positive(float),
        metavar="LR",
        help="learning rate of the first epoch (default: the model's own)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the weights and the shuffling (default: 0)",
    )
    train.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="file to save the trained model to (default: <model>.npz, e.g. deep.npz)",
    )
    train.add_argument(
        "--augment",
        action="store_true",
        help="rotate (up to 10 degrees) and shift (up to 2 pixels) "
        "every training batch",
    )
    train.add_argument(
        "--validate",
        action="store_true",
        help="also print the test accuracy after every epoch "
        "(costs a pass over the test images)",
    )
    train.add_argument(
        "--processes",
        type=_positive(int),
        default=1,
        metavar="P",
        help="processes that share every batch, one core each "
        "(the same training, faster on a machine with P free cores; default: 1)",
    )
    train.add_argument(
        "--limit",
        type=_positive(int),
        metavar="N",
        help="use only the first N training and N test images (for quick trials)",
    )

    ev = commands.add_parser(
        "evaluate",
        help="print the test accuracy of a saved model",
        description="Load a model saved by 'train' and print its accuracy "
        "on the MNIST test set.",
    )
    ev.add_argument(
        "file",
        type=Path,
        help="a model file written by 'python -m cnn train' (or cnn.io.save_model)",
    )
    ev.add_argument(
        "--limit",
        type=_positive(int),
        metavar="N",
        help="use only the first N test images",
    )

    pr = commands.add_parser(
        "predict",
        help="read images of handwritten digits with a saved model",
        description="Prepare each image as MNIST's digits were prepared (greyscale, "
        "dark ink on light paper inverted, the paper's background removed, cropped to "
        "the digit, scaled to fit 20 x 20, centred by its centre of mass in 28 x 28; "
        "see cnn.prepare_digit) and print the digit the model reads in it, its "
        "probability, and the ten probabilities. An image that cannot be read as a "
        "digit gets an error and exit code 2; the others are still predicted.",
    )
    pr.add_argument(
        "file",
        type=Path,
        help="a model file written by 'python -m cnn train' (or cnn.io.save_model)",
    )
    pr.add_argument(
        "images",
        type=Path,
        nargs="+",
        metavar="image",
        help="an image file of one digit (PNG, JPEG, ...): drawn, scanned or "
        "photographed",
    )

    ex = commands.add_parser(
        "export",
        help="export a saved model to ONNX",
        description="Write a saved model as a standard ONNX graph in evaluation mode "
        "(cnn.export_onnx): input 'images' (N, 1, 28, 28) float32, outputs "
        "'probabilities' and 'logits' (N, 10). Needs the onnx package: "
        'pip install "cnn[onnx]".',
    )
    ex.add_argument(
        "file",
        type=Path,
        help="a model file written by 'python -m cnn train' (or cnn.io.save_model)",
    )
    ex.add_argument("out", type=Path, help="the ONNX file to write, e.g. deep.onnx")
    return parser


def _train(args):
    build, epochs, batch_size = MODELS[args.model]
    epochs = args.epochs or epochs
    batch_size = args.batch_size or batch_size
    out = args.out or Path(f"{args.model}.npz")
    if not out.parent.is_dir():  # fail now, not after an hour of training
        print(
            f"error: cannot save to {out}: directory {out.parent} does not exist",
            file=sys.stderr,
        )
        return 2
    (X_train, y_train), (X_test, y_test) = load_mnist_prepared()
    X_train, y_train = X_train[: args.limit], y_train[: args.limit]
    X_test, y_test = X_test[: args.limit], y_test[: args.limit]
    model = build(
        seed=args.seed,
        **({"learning_rate": args.learning_rate} if args.learning_rate else {}),
    )
    print(
        f"training {args.model} ({model.num_params():,} parameters) on "
        f"{len(X_train):,} images: {epochs} epochs, batch size {batch_size}, learning "
        f"rate {model.learning_rate:g}{', with augmentation' if args.augment else ''}",
        flush=True,
    )
    validation = (X_test, y_test) if args.validate else None
    try:
        if args.augment:
            history = train_with_augmentation(
                model,
                X_train,
                y_train,
                epochs,
                batch_size,
                validation_data=validation,
                verbose=1,
                processes=args.processes,
            )
        else:
            history = model.train(
                X_train,
                y_train,
                epochs=epochs,
                batch_size=batch_size,
                validation_data=validation,
                verbose=1,
                processes=args.processes,
            )
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    save_model(model, out)
    print(
        f"test accuracy {evaluate(model, X_test, y_test):.2%} on {len(X_test):,} "
        f"images; trained in {sum(history['seconds']):.0f} s; saved to {out}"
    )
    return 0


def _load_mnist_model(file):
    """The model saved in ``file`` if it reads MNIST images, else None (the error
    printed)."""
    try:
        model = load_model(file)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
    if model.input_shape != (1, 28, 28) or model.num_classes != 10:
        print(
            f"error: {file}: the model takes inputs {model.input_shape} with "
            f"{model.num_classes} classes; MNIST needs (1, 28, 28) and 10",
            file=sys.stderr,
        )
        return None
    return model


def _evaluate(args):
    model = _load_mnist_model(args.file)
    if model is None:
        return 2
    _, (X_test, y_test) = load_mnist_prepared()
    X_test, y_test = X_test[: args.limit], y_test[: args.limit]
    print(
        f"{args.file}: test accuracy {evaluate(model, X_test, y_test):.2%} on "
        f"{len(X_test):,} images"
    )
    return 0


def _predict(args):
    model = _load_mnist_model(args.file)
    if model is None:
        return 2
    names, images, code = [], [], 0
    for name in args.images:
        try:
            images.append(prepare_digit(name))
        except DigitImageError as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
        else:
            names.append(name)
    if images:
        probabilities = model.predict_proba(np.stack(images))
        for name, p in zip(names, probabilities, strict=True):
            digit = int(p.argmax())
            print(f"{name}: {digit} ({p[digit]:.1%})")
            print("  " + " ".join(f"{k}:{q:.3f}" for k, q in enumerate(p)))
    return code


def _export(args):
    try:
        model = load_model(args.file)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.out.parent.is_dir():
        print(
            f"error: cannot write {args.out}: directory {args.out.parent} does not "
            "exist",
            file=sys.stderr,
        )
        return 2
    try:
        proto = export_onnx(model, args.out)
    except ImportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (UnsupportedLayerError, ValueError) as err:
        print(f"error: {args.file}: {err}", file=sys.stderr)
        return 2
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    dropouts = sum(type(layer) is Dropout for layer in model.layers)
    left_out = (
        f"; {dropouts} Dropout left out (the identity in evaluation)"
        if dropouts
        else ""
    )
    C, H, W = model.input_shape
    print(
        f"wrote {args.out}: ONNX opset {OPSET}, {args.out.stat().st_size:,} bytes\n"
        f"  images (N, {C}, {H}, {W}) float32 -> probabilities, logits "
        f"(N, {model.num_classes})\n"
        f"  {len(model.layers)} layers -> {len(proto.graph.node)} nodes: "
        + ", ".join(f"{op} x{n}" if n > 1 else op for op, n in ops.items())
        + left_out
    )
    return 0


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "export": _export,
}


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit
    code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        # --help (0) or a usage error (2), already printed by argparse
        return stop.code
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (OSError, DataIntegrityError) as err:
        # e.g. the output file cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
