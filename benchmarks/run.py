"""Speed benchmarks (``make bench``): seconds per training epoch of our NumPy CNN, of its loop version and
of the same model in Keras (JAX backend, CPU), plus per-layer times and how time grows with batch and
image size. Never run by the tests.

Every system is timed in a process of its own, one after another, so NumPy's BLAS threads and the
framework's thread pool never compete. Prints a table and writes ``benchmarks/results/latest.json``.

    python benchmarks/run.py                 # everything (about 4 minutes on 2 cores)
    python benchmarks/run.py --quick         # smaller subsets, for a smoke test
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------ workers


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


def worker_ours(name, n, batch_size, impl, epochs=1):
    """``epochs`` training epochs of our model on n images; returns each epoch's seconds."""
    X, y = _data(n)
    model = _build(name, impl)
    model.train(X[: min(n, 4 * batch_size)], y[: min(n, 4 * batch_size)], epochs=1, batch_size=batch_size,
                verbose=0)   # warm-up: allocations, caches
    history = model.train(X, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return {"epoch_seconds": history["seconds"], "images": n}


def worker_keras(name, n, batch_size, epochs=1):
    """``epochs`` training epochs of the same model in Keras (after a compile epoch), plain SGD like
    ours; returns each epoch's seconds."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from cnn.keras_compat import import_keras, to_keras

    keras = import_keras()
    X, y = _data(n)
    X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))   # Keras' own layout, its fastest on a CPU
    kmodel = to_keras(_build(name), data_format="channels_last")
    kmodel.compile(optimizer=keras.optimizers.SGD(0.05),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Compile first, on batches of both shapes the epochs will use (the last batch may be smaller).
    warm = 50 * batch_size + n % batch_size
    kmodel.fit(X[:warm], y[:warm], epochs=1, batch_size=batch_size, verbose=0, shuffle=False)
    starts, seconds = [], []
    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: starts.append(time.perf_counter()),
                                           on_epoch_end=lambda epoch, logs: seconds.append(time.perf_counter() - starts[-1]))
    kmodel.fit(X, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True, callbacks=[timer])
    return {"epoch_seconds": seconds, "images": n, "keras": keras.__version__}


def worker_layers(batch_size):
    """Forward and backward milliseconds of each step of SimpleCNN's training on one batch (median of 50),
    with BLAS on one thread, in the order and form that training runs them (``training_steps``: the
    convolution fused with its max pool, then the ReLU); like training, the first step computes no
    gradient for the images."""
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
        rows.append({"layer": repr(layer), "forward_ms": fwd, "backward_ms": bwd, "input_gradient": i > 0})
    return rows


def worker_scaling(kind):
    """Milliseconds per image of a SimpleCNN-style training step against batch size or image size."""
    from threadpoolctl import threadpool_limits

    from cnn import ConvLayer, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU, Sequential
    from cnn.train import train_step

    threadpool_limits(limits=1, user_api="blas")   # as during training (see Sequential's blas_threads)
    rng = np.random.default_rng(0)
    rows = []
    cases = [(b, 28) for b in (8, 16, 32, 64, 128, 256, 512)] if kind == "batch" else \
        [(32, s) for s in (14, 28, 56, 112)]
    for batch_size, size in cases:
        model = Sequential([ConvLayer(8, 3, 1, padding=1, rng=0), ReLU(), MaxPoolLayer(), Flatten(),
                            FullyConnectedLayer(8 * (size // 2) ** 2, 10, rng=0)], learning_rate=0.01,
                           input_shape=(1, size, size))
        X = rng.random((batch_size, 1, size, size), dtype=np.float32)
        y = rng.integers(0, 10, batch_size)
        order = model.training_steps()   # as training runs them (conv and pool fused, then the ReLU)
        ms = _median_ms(lambda: train_step(model, X, y, order), repeats=max(5, 2048 // batch_size))
        rows.append({"batch_size": batch_size, "image_size": size, "ms_per_step": ms,
                     "us_per_image": 1000 * ms / batch_size})
    return rows


def _median_ms(fn, repeats=50):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


WORKERS = {"ours": worker_ours, "keras": worker_keras, "layers": worker_layers, "scaling": worker_scaling}


# ------------------------------------------------------------------------------------------ driver


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
        blas = config["Build Dependencies"]["blas"]["name"] + " " + config["Build Dependencies"]["blas"].get("version", "")
    except Exception:  # older NumPy: no dict mode
        pass
    return {"cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__, "blas": blas,
            "machine": platform.machine(), "processor": platform.processor() or platform.machine()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small subsets: a smoke test, not a measurement")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--skip-deep", action="store_true", help="leave out the deeper network")
    args = parser.parse_args(argv)
    if args.worker:
        name, *rest = json.loads(args.worker)
        print(json.dumps(WORKERS[name](*rest)))
        return 0

    n_full = 6000 if args.quick else 60000
    n_loops = 32 if args.quick else 160
    results = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "epochs": {}}
    print(f"machine: {results['machine']}")
    ours, loops, keras = "ours (NumPy, vectorised)", "ours (NumPy, loops), extrapolated", "Keras 3 (JAX backend, CPU)"
    # SimpleCNN, the comparison the speed target is about: our version and Keras take turns, three rounds
    # of two epochs each, so that a slow spell of the machine does not fall on one system only; each row
    # is the median of the six epochs. The loop version is timed once, on a few batches.
    rounds = 1 if args.quick else 3
    plan = []
    for _ in range(rounds):
        plan += [("simple", ours, ("ours", "simple", n_full, 32, "vectorized", 2)),
                 ("simple", keras, ("keras", "simple", n_full, 32, 2))]
    plan.append(("simple", loops, ("ours", "simple", n_loops, 32, "loops", 1)))
    # The deeper network trains with batches of 64 (DEEP_CNN_TRAINING); both systems use the same.
    if not args.skip_deep:
        plan += [("deep", ours, ("ours", "deep", n_full // 4, 64, "vectorized", 1)),
                 ("deep", keras, ("keras", "deep", n_full // 4, 64, 1))]
    for model, system, worker in plan:
        try:
            row = run_worker(*worker)
        except RuntimeError as err:
            print(f"  {model:7s} {system:38s} failed: {str(err).splitlines()[0]}")
            continue
        entry = results["epochs"].setdefault(model, {}).setdefault(system, {"images": row["images"], "epoch_seconds": []})
        entry["epoch_seconds"] += row["epoch_seconds"]
        entry["seconds_per_epoch"] = float(np.median(entry["epoch_seconds"])) * 60000 / row["images"]
        print(f"  {model:7s} {system:38s} epochs of {row['images']} images took "
              + ", ".join(f"{t:.2f}" for t in row["epoch_seconds"]) + " s")
    print("\nseconds per 60,000-image epoch (median of the epochs above, scaled to 60,000 images):")
    for model, systems in results["epochs"].items():
        for system, entry in systems.items():
            print(f"  {model:7s} {system:38s} {entry['seconds_per_epoch']:9.1f}")
    simple = results["epochs"].get("simple", {})
    if ours in simple:
        ours_s = simple[ours]["seconds_per_epoch"]
        if keras in simple:
            results["ours_over_keras"] = ours_s / simple[keras]["seconds_per_epoch"]
            print(f"  SimpleCNN, batch 32: ours / Keras = {results['ours_over_keras']:.2f} (target <= 0.5)")
        if loops in simple:
            results["speedup_over_loops"] = simple[loops]["seconds_per_epoch"] / ours_s
            print(f"  SimpleCNN, batch 32: vectorised is {results['speedup_over_loops']:,.0f}x faster than the loops "
                  "(target >= 100x)")

    results["layers"] = run_worker("layers", 32)
    print("\nper layer, batch 32, in the order training runs them (ms):")
    for row in results["layers"]:
        note = "" if row.get("input_gradient", True) else "  (no image gradient, as in training)"
        print(f"  {row['layer']:60s} forward {row['forward_ms']:7.3f}  backward {row['backward_ms']:7.3f}{note}")
    for kind in ("batch", "image"):
        results[f"scaling_{kind}"] = run_worker("scaling", kind)
        print(f"\nscaling with {kind} size:")
        for row in results[f"scaling_{kind}"]:
            print(f"  batch {row['batch_size']:4d}  image {row['image_size']:4d}  "
                  f"{row['ms_per_step']:8.2f} ms per step  {row['us_per_image']:8.1f} us per image")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"\nwritten {RESULTS / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
