"""Command line: train a network on MNIST and save it, or evaluate a saved one.

::

    # the recommended settings of each model
    python -m cnn train --model deep --out deep.npz
    python -m cnn train --model simple --epochs 2 --limit 5000 --out small.npz
    python -m cnn evaluate deep.npz

Exit codes: 0 success, 1 training failed (diverged), 2 bad arguments or a missing or
invalid model file, 130 interrupted.
"""

import argparse
import sys
from pathlib import Path

from .augment import train_with_augmentation
from .data import DataIntegrityError, load_mnist_prepared
from .io import ModelFileError, load_model, save_model
from .networks import DEEP_CNN_TRAINING, SimpleCNN, deep_cnn, two_conv_net
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
            "Train convolutional networks on MNIST with NumPy, and evaluate them."
        ),
        epilog="examples:\n  python -m cnn train --model deep --out deep.npz\n"
        "  python -m cnn train --model simple --epochs 2 --limit 5000 --out small.npz\n"
        "  python -m cnn evaluate deep.npz\n\n"
        "run 'python -m cnn train --help' for the training options",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,evaluate}"
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
            )
        else:
            history = model.train(
                X_train,
                y_train,
                epochs=epochs,
                batch_size=batch_size,
                validation_data=validation,
                verbose=1,
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


def _evaluate(args):
    try:
        model = load_model(args.file)
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    _, (X_test, y_test) = load_mnist_prepared()
    X_test, y_test = X_test[: args.limit], y_test[: args.limit]
    if model.input_shape != X_test.shape[1:] or model.num_classes != 10:
        print(
            f"error: {args.file}: the model takes inputs {model.input_shape} with "
            f"{model.num_classes} classes; MNIST needs (1, 28, 28) and 10",
            file=sys.stderr,
        )
        return 2
    print(
        f"{args.file}: test accuracy {evaluate(model, X_test, y_test):.2%} on "
        f"{len(X_test):,} images"
    )
    return 0


def main(argv=None):
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit
    code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        # --help (0) or a usage error (2), already printed by argparse
        return stop.code
    try:
        return _train(args) if args.command == "train" else _evaluate(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (OSError, DataIntegrityError) as err:
        # e.g. the output file cannot be written
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
