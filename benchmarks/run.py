"""Speed benchmarks (``make bench``): seconds per training epoch of our NumPy CNN, of
its loop version and of the same models in two frameworks on the CPU, Keras
3 (JAX backend) and PyTorch, plus per-layer times and how time grows with batch and
image size. Never run by the tests.

Every system is timed in a process of its own, one after another, so NumPy's BLAS
threads and a framework's thread pool never compete; the systems take turns (ours,
ours on two processes, Keras, PyTorch, ours, ...) for several rounds, so that a slow
spell of the machine does not fall on one system only. Prints a table, with our time
over each framework's for both networks, and writes ``benchmarks/results/latest.json``.

    python benchmarks/run.py                 # everything (several minutes on 2 cores)
    python benchmarks/run.py --quick         # smaller subsets, for a smoke test

The frameworks come with the benchmark's extra: ``pip install -e '.[bench]'``
(``make bench`` does it).
"""

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------ workers


def _data(n):
    from cnn import load_mnist_prepared

    (X, y), _ = load_mnist_prepared()
    return X[:n], y[:n]


def _build(name, impl="vectorized"):
    from cnn import SimpleCNN

    if name == "simple":
        return SimpleCNN(seed=0, impl=impl)
    from cnn.networks import deep_cnn

    return deep_cnn(seed=0)


def worker_ours(name, n, batch_size, impl, epochs=1, processes=1):
    """``epochs`` training epochs of our model on n images, in ``processes`` processes
    (:mod:`cnn.parallel`); returns each epoch's seconds."""
    X, y = _data(n)
    model = _build(name, impl)
    # warm-up: allocations, caches
    model.train(
        X[: min(n, 4 * batch_size)],
        y[: min(n, 4 * batch_size)],
        epochs=1,
        batch_size=batch_size,
        verbose=0,
        processes=processes,
    )
    # Processes fork afresh for every train(), and their first batches pay for copying
    # the memory pages both come to write: with processes, one more epoch first, not
    # timed (a warm-up in the same processes, as the frameworks' are in theirs).
    extra = 1 if processes > 1 else 0
    history = model.train(
        X,
        y,
        epochs=epochs + extra,
        batch_size=batch_size,
        verbose=0,
        processes=processes,
    )
    return {"epoch_seconds": history["seconds"][extra:], "images": n}


def _optimizer(model):
    """How our model steps its parameters: ``("sgd", learning_rate)`` for plain SGD
    (SimpleCNN), or ``("adam", learning_rate, beta1, beta2, eps)`` (deep_cnn, from
    DEEP_CNN_TRAINING)."""
    from cnn.optim import Adam

    if model.optimizer is None:
        return ("sgd", model.learning_rate)
    if isinstance(model.optimizer, Adam):
        opt = model.optimizer
        return ("adam", model.learning_rate, opt.beta1, opt.beta2, opt.eps)
    raise ValueError(f"no framework twin for the optimizer {model.optimizer!r}")


def worker_keras(name, n, batch_size, epochs=1):
    """``epochs`` training epochs of the same model in Keras (after a compile epoch),
    with our model's optimizer (plain SGD for SimpleCNN, Adam for deep_cnn) at its
    learning rate; returns each epoch's seconds."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from cnn.keras_compat import import_keras, to_keras

    keras = import_keras()
    X, y = _data(n)
    # Keras' own layout, its fastest on a CPU
    X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))
    model = _build(name)
    kind, lr, *adam = _optimizer(model)
    optimizer = (
        keras.optimizers.SGD(lr)
        if kind == "sgd"
        else keras.optimizers.Adam(lr, beta_1=adam[0], beta_2=adam[1], epsilon=adam[2])
    )
    kmodel = to_keras(model, data_format="channels_last")
    kmodel.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    # Compile first, on batches of both shapes the epochs will use (the last batch may
    # be smaller).
    warm = 50 * batch_size + n % batch_size
    kmodel.fit(
        X[:warm], y[:warm], epochs=1, batch_size=batch_size, verbose=0, shuffle=False
    )
    starts, seconds = [], []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: seconds.append(
            time.perf_counter() - starts[-1]
        ),
    )
    kmodel.fit(
        X,
        y,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        shuffle=True,
        callbacks=[timer],
    )
    return {"epoch_seconds": seconds, "images": n, "keras": keras.__version__}


#: PyTorch's threads. torch.get_num_threads() is 2 by default on this 2-core machine
#: (one per physical core); set explicitly, so that the benchmark says what it measured.
TORCH_THREADS = 2
#: Our data-parallel training's processes (cnn.parallel), one per core, as PyTorch's
#: threads.
OUR_PROCESSES = 2
TORCH_MISSING = "PyTorch not installed: pip install '.[bench]'"


def _torch_model(name):
    """The same network as ``_build(name)`` in PyTorch, layer for layer
    (NCHW, as ours)."""
    from torch import nn

    if name == "simple":
        # Conv(8, 3x3, pad 1) -> ReLU -> MaxPool 2x2 -> Flatten -> FC(1568 -> 10)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 14 * 14, 10),
        )
    # deep_cnn: two stages of [Conv 3x3 (pad 1) -> BatchNorm -> ReLU] x 2 -> MaxPool
    # 2x2, filters (16, 32), then FC(32*7*7 -> 128) -> ReLU -> Dropout(0.25) ->
    # FC(128 -> 10). Our BatchNorm's momentum 0.9 (the old running mean's weight) is
    # PyTorch's 0.1 (the new batch's), eps 1e-5 in both.
    layers, channels = [], 1
    for filters in (16, 32):
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, filters, 3, padding=1),
                nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1),
                nn.ReLU(),
            ]
            channels = filters
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(
        *layers,
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(128, 10),
    )


def worker_torch(name, n, batch_size, epochs=1):
    """``epochs`` training epochs of the same model in PyTorch on the CPU, trained as
    ours is: the same images, batches of ``batch_size`` shuffled every epoch, the mean
    cross-entropy of the logits, our model's optimizer (plain SGD for SimpleCNN, Adam
    for deep_cnn) at its learning rate, decayed by its ``lr_decay`` every epoch; after a
    warm-up on a few batches, as ours has. Returns each epoch's seconds.

    PyTorch keeps its own initial weights: copying ours would not change the time of an
    epoch. The architecture is checked instead: the same layers and the same number of
    parameters as ours.
    """
    try:
        import torch
    except ImportError:
        raise SystemExit(TORCH_MISSING) from None
    from torch import nn

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    model = _build(name)
    net = _torch_model(name)
    torch_params = sum(p.numel() for p in net.parameters())
    assert torch_params == model.num_params(), (
        f"{name}: PyTorch's twin has {torch_params} parameters, "
        f"ours {model.num_params()}"
    )
    kind, lr, *adam = _optimizer(model)
    optimizer = (
        torch.optim.SGD(net.parameters(), lr=lr)
        if kind == "sgd"
        else torch.optim.Adam(
            net.parameters(), lr=lr, betas=(adam[0], adam[1]), eps=adam[2]
        )
    )
    loss_fn = nn.CrossEntropyLoss()  # the mean over the batch, from the logits, as ours
    X, y = _data(n)
    X, y = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    generator = torch.Generator().manual_seed(0)

    def step(xb, yb):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        optimizer.step()
        return loss.detach()

    net.train()
    # Warm-up, as ours has: allocations and oneDNN's kernels for both batch shapes the
    # epochs will use.
    warm = min(n, 4 * batch_size)
    for start in range(0, warm, batch_size):
        step(X[start : start + batch_size], y[start : start + batch_size])
    if n % batch_size:
        step(X[: n % batch_size], y[: n % batch_size])
    seconds = []
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * model.lr_decay**epoch
        order = torch.randperm(n, generator=generator)
        start = time.perf_counter()
        total = torch.zeros(())
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            # the running loss, as ours and Keras keep
            total += step(X[idx], y[idx]) * len(idx)
        seconds.append(time.perf_counter() - start)
    return {
        "epoch_seconds": seconds,
        "images": n,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": torch_params,
        "loss": float(total) / n,
    }


def worker_layers(batch_size):
    """Forward and backward milliseconds of each step of SimpleCNN's training on one
    batch (median of 50), with BLAS on one thread, in the order and form that training
    runs them (``training_steps``: the convolution fused with its max pool, then the
    ReLU); like training, the first step computes no gradient for the images."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    model = _build("simple")
    X, _ = _data(batch_size)
    rows = []
    out = X
    for i, layer in enumerate(model.training_steps()):
        inp = out
        fwd = _median_ms(lambda: layer.forward(inp))
        out = layer.forward(inp)
        dout = np.ones_like(out)
        kwargs = {"input_grad": False} if i == 0 else {}
        bwd = _median_ms(lambda: layer.gradient(dout, **kwargs))
        rows.append(
            {
                "layer": repr(layer),
                "forward_ms": fwd,
                "backward_ms": bwd,
                "input_gradient": i > 0,
            }
        )
    return rows


def worker_scaling(kind):
    """Milliseconds per image of a SimpleCNN-style training step against batch size or
    image size."""
    from threadpoolctl import threadpool_limits

    from cnn import (
        ConvLayer,
        Flatten,
        FullyConnectedLayer,
        MaxPoolLayer,
        ReLU,
        Sequential,
    )
    from cnn.train import train_step

    # as during training (see Sequential's threads)
    threadpool_limits(limits=1, user_api="blas")
    rng = np.random.default_rng(0)
    rows = []
    cases = (
        [(b, 28) for b in (8, 16, 32, 64, 128, 256, 512)]
        if kind == "batch"
        else [(32, s) for s in (14, 28, 56, 112)]
    )
    for batch_size, size in cases:
        model = Sequential(
            [
                ConvLayer(8, 3, 1, padding=1, rng=0),
                ReLU(),
                MaxPoolLayer(),
                Flatten(),
                FullyConnectedLayer(8 * (size // 2) ** 2, 10, rng=0),
            ],
            learning_rate=0.01,
            input_shape=(1, size, size),
        )
        X = rng.random((batch_size, 1, size, size), dtype=np.float32)
        y = rng.integers(0, 10, batch_size)
        # as training runs them (conv and pool fused, then the ReLU)
        order = model.training_steps()
        ms = _median_ms(
            lambda: train_step(model, X, y, order), repeats=max(5, 2048 // batch_size)
        )
        rows.append(
            {
                "batch_size": batch_size,
                "image_size": size,
                "ms_per_step": ms,
                "us_per_image": 1000 * ms / batch_size,
            }
        )
    return rows


def _median_ms(fn, repeats=50):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


WORKERS = {
    "ours": worker_ours,
    "keras": worker_keras,
    "torch": worker_torch,
    "layers": worker_layers,
    "scaling": worker_scaling,
}


# ------------------------------------------------------------------------------- driver


def run_worker(*args):
    """Run one worker in a fresh Python process and return what it printed (JSON)."""
    cmd = [sys.executable, __file__, "--worker", json.dumps(args)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine():
    blas = "unknown"
    try:
        config = np.show_config(mode="dicts")
        blas = (
            config["Build Dependencies"]["blas"]["name"]
            + " "
            + config["Build Dependencies"]["blas"].get("version", "")
        )
    except Exception:  # older NumPy: no dict mode
        pass
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small subsets: a smoke test, not a measurement",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip-deep", action="store_true", help="leave out the deeper network"
    )
    args = parser.parse_args(argv)
    if args.worker:
        name, *rest = json.loads(args.worker)
        print(json.dumps(WORKERS[name](*rest)))
        return 0

    n_full = 6000 if args.quick else 60000
    n_loops = 32 if args.quick else 160
    results = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_before": os.getloadavg(),
        "epochs": {},
        "ratios": {},
    }
    print(f"machine: {results['machine']}")
    # Other work on the machine slows every system, PyTorch's two threads most (a thread
    # that waits for a busy core stalls the other at every barrier): the load is part of
    # the result.
    print(
        "load average (1, 5, 15 min): "
        + ", ".join(f"{v:.2f}" for v in results["load_before"])
    )
    ours, loops = "ours (NumPy, vectorised)", "ours (NumPy, loops), extrapolated"
    ours_parallel = f"ours (NumPy, vectorised, {OUR_PROCESSES} processes)"
    keras, pytorch = (
        "Keras 3 (JAX backend, CPU)",
        f"PyTorch (CPU, {TORCH_THREADS} threads)",
    )
    # found, not imported: no threads started here
    has_torch = importlib.util.find_spec("torch") is not None
    if not has_torch:
        print(f"  {TORCH_MISSING} (its rows are left out)")
    # For each network, ours (on one process and on two), Keras and PyTorch take turns,
    # each in a process of its own, for three rounds, so that a slow spell of the
    # machine does not fall on one system only; each row is the median of its epochs
    # (the best is kept too). SimpleCNN: two epochs per turn, batches of 32. deep_cnn:
    # one epoch of a quarter of the images per turn, batches of 64 (DEEP_CNN_TRAINING).
    # The loop version is timed once, on a few batches.
    rounds = 1 if args.quick else 3
    peers = [("keras", keras)] + ([("torch", pytorch)] if has_torch else [])

    def turns(model, n, batch_size, epochs):
        plan = []
        for _ in range(rounds):
            plan.append(
                (model, ours, ("ours", model, n, batch_size, "vectorized", epochs))
            )
            plan.append(
                (
                    model,
                    ours_parallel,
                    ("ours", model, n, batch_size, "vectorized", epochs, OUR_PROCESSES),
                )
            )
            plan += [
                (model, system, (worker, model, n, batch_size, epochs))
                for worker, system in peers
            ]
        return plan

    plan = turns("simple", n_full, 32, 2) + [
        ("simple", loops, ("ours", "simple", n_loops, 32, "loops", 1))
    ]
    if not args.skip_deep:
        plan += turns("deep", n_full // 4, 64, 1)
    for model, system, worker in plan:
        try:
            row = run_worker(*worker)
        except RuntimeError as err:
            # the error itself
            print(
                f"  {model:7s} {system:38s} failed: {str(err).strip().splitlines()[-1]}"
            )
            continue
        entry = (
            results["epochs"]
            .setdefault(model, {})
            .setdefault(system, {"images": row["images"], "epoch_seconds": []})
        )
        entry["epoch_seconds"] += row["epoch_seconds"]
        entry["seconds_per_epoch"] = (
            float(np.median(entry["epoch_seconds"])) * 60000 / row["images"]
        )
        entry["best_seconds_per_epoch"] = (
            float(np.min(entry["epoch_seconds"])) * 60000 / row["images"]
        )
        # versions
        entry.update(
            {
                k: v
                for k, v in row.items()
                if k not in ("epoch_seconds", "images", "loss")
            }
        )
        print(
            f"  {model:7s} {system:38s} epochs of {row['images']} images took "
            + ", ".join(f"{t:.2f}" for t in row["epoch_seconds"])
            + " s"
        )
    print(
        "\nseconds per 60,000-image epoch "
        "(of the epochs above, scaled to 60,000 images):"
    )
    print(f"  {'':7s} {'':38s} {'median':>9s} {'best':>9s}")
    for model, systems in results["epochs"].items():
        for system, entry in systems.items():
            median, best = entry["seconds_per_epoch"], entry["best_seconds_per_epoch"]
            print(f"  {model:7s} {system:38s} {median:9.1f} {best:9.1f}")
    # Our time over each framework's (below 1: ours is faster), from the medians (and
    # from the best epochs). The targets are issue 15's.
    titles = {
        "simple": ("SimpleCNN, batch 32", {"keras": 0.5, "pytorch": 0.40}),
        "deep": ("deep_cnn, batch 64 ", {"pytorch": 1.5}),
    }
    for model, (title, targets) in titles.items():
        epochs = results["epochs"].get(model, {})
        ratios = results["ratios"].setdefault(model, {})
        for mine, prefix, name in (
            (ours, "ours", "ours"),
            (
                ours_parallel,
                f"ours_{OUR_PROCESSES}_processes",
                f"ours, {OUR_PROCESSES} processes",
            ),
        ):
            if mine not in epochs:
                continue
            parts = []
            for key, label, system in (
                ("keras", "Keras", keras),
                ("pytorch", "PyTorch", pytorch),
            ):
                if key == "pytorch" and not has_torch:
                    parts.append(f"/ PyTorch: {TORCH_MISSING}")
                elif system not in epochs:
                    parts.append(f"/ {label}: no time (its runs failed)")
                else:
                    ratio, best = (
                        epochs[mine][field] / epochs[system][field]
                        for field in ("seconds_per_epoch", "best_seconds_per_epoch")
                    )
                    ratios[f"{prefix}_over_{key}"] = ratio
                    ratios[f"{prefix}_over_{key}_best"] = best
                    target = f", target <= {targets[key]:.2f}" if key in targets else ""
                    parts.append(f"/ {label} = {ratio:.2f} (best {best:.2f}{target})")
            print(f"  {title}: {name} " + "; ".join(parts))
    if "ours_over_keras" in results["ratios"].get("simple", {}):
        # as in earlier results
        results["ours_over_keras"] = results["ratios"]["simple"]["ours_over_keras"]
    simple = results["epochs"].get("simple", {})
    if ours in simple and loops in simple:
        results["speedup_over_loops"] = (
            simple[loops]["seconds_per_epoch"] / simple[ours]["seconds_per_epoch"]
        )
        print(
            "  SimpleCNN, batch 32: vectorised is "
            f"{results['speedup_over_loops']:,.0f}x faster than the loops "
            "(target >= 100x)"
        )

    results["load_after"] = os.getloadavg()
    print(
        "  load average now (1, 5, 15 min): "
        + ", ".join(f"{v:.2f}" for v in results["load_after"])
    )

    results["layers"] = run_worker("layers", 32)
    print("\nper layer, batch 32, in the order training runs them (ms):")
    for row in results["layers"]:
        note = (
            ""
            if row.get("input_gradient", True)
            else "  (no image gradient, as in training)"
        )
        print(
            f"  {row['layer']:60s} forward {row['forward_ms']:7.3f}  "
            f"backward {row['backward_ms']:7.3f}{note}"
        )
    for kind in ("batch", "image"):
        results[f"scaling_{kind}"] = run_worker("scaling", kind)
        print(f"\nscaling with {kind} size:")
        for row in results[f"scaling_{kind}"]:
            print(
                f"  batch {row['batch_size']:4d}  image {row['image_size']:4d}  "
                f"{row['ms_per_step']:8.2f} ms per step  "
                f"{row['us_per_image']:8.1f} us per image"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
