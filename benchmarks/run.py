"""Speed benchmarks (``make bench``): seconds per training epoch of our NumPy CNN, of its loop version and
of the same model in Keras (JAX backend, CPU), plus per-layer times and how time grows with batch and
image size. Never run by the tests.

Every system is timed in a process of its own, one after another, so NumPy's BLAS threads and the
framework's thread pool never compete. Prints a table and writes ``benchmarks/results/latest.json``.

    python benchmarks/run.py                 # everything (about 5 minutes on 2 cores)
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


def worker_ours(name, n, batch_size, impl):
    """One training epoch of our model on n images; returns seconds (extrapolated to 60,000 images)."""
    X, y = _data(n)
    model = _build(name, impl)
    model.train(X[: min(n, 4 * batch_size)], y[: min(n, 4 * batch_size)], epochs=1, batch_size=batch_size,
                verbose=0)   # warm-up: allocations, caches
    start = time.perf_counter()
    model.train(X, y, epochs=1, batch_size=batch_size, verbose=0)
    seconds = time.perf_counter() - start
    return {"seconds_measured": seconds, "images": n, "seconds_per_epoch": seconds * 60000 / n}


def worker_keras(name, n, batch_size):
    """One training epoch of the same model in Keras (after a compile epoch); plain SGD like ours."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    from cnn.keras_compat import import_keras, to_keras

    keras = import_keras()
    X, y = _data(n)
    X = np.ascontiguousarray(X.transpose(0, 2, 3, 1))   # Keras' own layout, its fastest on a CPU
    kmodel = to_keras(_build(name), data_format="channels_last")
    kmodel.compile(optimizer=keras.optimizers.SGD(0.05),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    kmodel.fit(X[: 50 * batch_size], y[: 50 * batch_size], epochs=1, batch_size=batch_size, verbose=0)  # compile
    start = time.perf_counter()
    kmodel.fit(X, y, epochs=1, batch_size=batch_size, verbose=0, shuffle=True)
    seconds = time.perf_counter() - start
    return {"seconds_measured": seconds, "images": n, "seconds_per_epoch": seconds * 60000 / n,
            "keras": keras.__version__}


def worker_layers(batch_size):
    """Forward and backward milliseconds of each SimpleCNN layer on one batch (median of 50), with BLAS
    on one thread as during training."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    model = _build("simple")
    X, _ = _data(batch_size)
    rows = []
    out = X
    for layer in model.layers:
        inp = out
        fwd = _median_ms(lambda: layer.forward(inp))
        out = layer.forward(inp)
        dout = np.ones_like(out)
        bwd = _median_ms(lambda: layer.gradient(dout))
        rows.append({"layer": repr(layer), "forward_ms": fwd, "backward_ms": bwd})
    return rows


def worker_scaling(kind):
    """Milliseconds per image of a SimpleCNN-style training step against batch size or image size."""
    from threadpoolctl import threadpool_limits

    from cnn import ConvLayer, Flatten, FullyConnectedLayer, MaxPoolLayer, ReLU, Sequential

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
        ms = _median_ms(lambda: (model.forward(X), model.backward(X, y)), repeats=max(5, 2048 // batch_size))
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
    plan = [("simple", "ours (NumPy, vectorised)", ("ours", "simple", n_full, 32, "vectorized")),
            ("simple", "ours (NumPy, loops), extrapolated", ("ours", "simple", n_loops, 32, "loops")),
            ("simple", "Keras 3 (JAX backend, CPU)", ("keras", "simple", n_full, 32))]
    # The deeper network trains with batches of 64 (DEEP_CNN_TRAINING); both systems use the same.
    if not args.skip_deep:
        plan += [("deep", "ours (NumPy, vectorised)", ("ours", "deep", n_full // 4, 64, "vectorized")),
                 ("deep", "Keras 3 (JAX backend, CPU)", ("keras", "deep", n_full // 4, 64))]
    for model, system, worker in plan:
        try:
            row = run_worker(*worker)
        except RuntimeError as err:
            print(f"  {model:7s} {system:38s} failed: {str(err).splitlines()[0]}")
            continue
        results["epochs"].setdefault(model, {})[system] = row
        print(f"  {model:7s} {system:38s} {row['seconds_per_epoch']:9.1f} s per 60,000-image epoch "
              f"(measured on {row['images']} images)")
    simple = results["epochs"].get("simple", {})
    ours = simple.get("ours (NumPy, vectorised)", {}).get("seconds_per_epoch")
    if ours:
        for system, row in simple.items():
            if system != "ours (NumPy, vectorised)":
                results.setdefault("ratios", {})[f"ours / {system}"] = ours / row["seconds_per_epoch"]
        for name, ratio in results.get("ratios", {}).items():
            print(f"  ratio {name}: {ratio:.3f}")

    results["layers"] = run_worker("layers", 32)
    print("\nper layer, batch 32 (ms):")
    for row in results["layers"]:
        print(f"  {row['layer']:60s} forward {row['forward_ms']:7.3f}  backward {row['backward_ms']:7.3f}")
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
