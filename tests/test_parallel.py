"""Tests of data-parallel training (cnn.parallel): several processes, each computing its
rows of every batch, train the model that one process trains.

The processes are forked, and this test session has imported JAX, which is not
fork-safe (training refuses to fork it, tested below); so the trainings run in a fresh
Python of their own, which prints its findings as JSON.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import cnn
from cnn import BatchNorm, ConvLayer, Flatten, FullyConnectedLayer, Layer, ReLU
from cnn.model import Sequential

# A network with every layer that mixes the images of a batch (batch normalisation of
# feature maps and of vectors, dropout) and a convolution of each algorithm, in float64
# so that the two trainings can be compared to about 1e-12.
NETWORK = """
import numpy as np
import cnn
from cnn import (BatchNorm, ConvLayer, Dropout, Flatten, FullyConnectedLayer,
                 MaxPoolLayer, ReLU)
from cnn.augment import augment_batch
from cnn.model import Sequential

def network(seed=0):
    layers = [
        ConvLayer(3, 3, 1, stride=1, padding=1, rng=seed), BatchNorm(3), ReLU(),
        MaxPoolLayer(2, 2),
        ConvLayer(4, 3, 3, stride=1, padding=1, rng=seed + 1), BatchNorm(4), ReLU(),
        Flatten(),
        FullyConnectedLayer(4 * 4 * 4, 6, rng=seed + 2), BatchNorm(6), ReLU(),
        Dropout(0.3, rng=seed + 3),
        FullyConnectedLayer(6, 10, rng=seed + 4),
    ]
    return Sequential(layers, learning_rate=0.1, seed=seed, input_shape=(1, 8, 8))

rng = np.random.default_rng(0)
X = rng.random((23, 1, 8, 8))
y = rng.integers(0, 10, 23)
X_val, y_val = rng.random((9, 1, 8, 8)), rng.integers(0, 10, 9)
"""


def fresh_python(code):
    """Run ``code`` in a new Python process; return the JSON it printed last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_two_processes_train_the_model_one_process_trains():
    """Batches of 8, 8 and 7 images (the last split 3 + 4), augmented, with validation:
    two epochs in two processes give the history, parameters, running statistics and
    generators of one process, to float64 rounding; the layers are given back without
    their peers."""
    found = fresh_python(
        NETWORK
        + """
import json

def trained(processes):
    model = network().astype(np.float64)
    history = model.train(
        X, y, epochs=2, batch_size=8, validation_data=(X_val, y_val), verbose=0,
        augment=augment_batch, processes=processes,
    )
    return model, history

one, h1 = trained(1)
two, h2 = trained(2)
arrays = lambda m: [a for l in m.layers for s in (l.params, l.buffers)
                    for a in s.values()]
print(json.dumps({
    "arrays": len(arrays(one)),
    "largest_difference": max(
        float(np.abs(a - b).max() / (1 + np.abs(a).max()))
        for a, b in zip(arrays(one), arrays(two))),
    "loss": [h1["loss"], h2["loss"]],
    "val_loss": [h1["val_loss"], h2["val_loss"]],
    "accuracy": [h1["accuracy"], h2["accuracy"]],
    "val_accuracy": [h1["val_accuracy"], h2["val_accuracy"]],
    "next_draws": [[float(m.rng.random()), float(m.layers[11].rng.random())]
                   for m in (one, two)],
    "peers_left": [type(l).__name__ for l in two.layers if l.peers is not None],
    "moved": float(np.abs(arrays(two)[0] - arrays(network())[0]).max()),
}))
"""
    )
    # weights and biases of 4 layers; gamma, beta and 2 statistics of 3 BatchNorms
    assert found["arrays"] == 4 * 2 + 3 * 4
    assert found["largest_difference"] < 1e-10
    assert found["moved"] > 1e-3  # the trainings did change the weights
    for name in ("loss", "val_loss"):
        np.testing.assert_allclose(*found[name], rtol=1e-10)
    for name in ("accuracy", "val_accuracy"):
        assert found[name][0] == found[name][1]
    assert found["next_draws"][0] == found["next_draws"][1]
    assert found["peers_left"] == []


def test_three_processes_train_simple_cnn_as_one_in_float32():
    """SimpleCNN (its convolution and pooling run as one ConvMaxPool step) in three
    processes, batches of 10 split 3 + 3 + 4: the weights one process trains, to float32
    rounding."""
    found = fresh_python(
        """
import json
import numpy as np
import cnn

(X, y), _ = cnn.load_mnist_prepared()
weights = []
for processes in (1, 3):
    model = cnn.SimpleCNN(seed=0)
    model.train(X[:100], y[:100], epochs=1, batch_size=10, verbose=0,
                processes=processes)
    weights.append([p for l in model.param_layers for p in l.params.values()])
print(json.dumps({
    "largest_difference": max(float(np.abs(a - b).max())
                              for a, b in zip(*weights)),
    "moved": float(np.abs(weights[0][0] - cnn.SimpleCNN(seed=0).layers[0].weights
                          ).max()),
}))
"""
    )
    assert found["moved"] > 1e-2
    assert found["largest_difference"] < 1e-5


def test_a_training_leaves_no_file_open():
    """The pipes between the processes and the shared memory are closed when the
    training ends, however often it is called."""
    found = fresh_python(
        """
import json, os
import cnn
(X, y), _ = cnn.load_mnist_prepared()
model = cnn.SimpleCNN(seed=0)
open_files = lambda: len(os.listdir("/proc/self/fd"))
before = open_files()
for _ in range(3):
    model.train(X[:64], y[:64], epochs=1, batch_size=16, verbose=0, processes=3)
print(json.dumps([before, open_files()]))
"""
    )
    assert found[0] == found[1]


def test_sums_over_peers_keep_shapes_and_dtypes():
    """Peers.allsum in three processes: each process's arrays are summed element by
    element, in their shapes and dtype, sum after sum."""
    found = fresh_python(
        """
import json
import numpy as np
from cnn.parallel import run

def work(peers):
    r = peers.rank
    sums = []
    for i in range(5):  # more sums than the two banks, to reuse them
        a = np.full((2, 3), r + i, np.float32)
        b = np.arange(4.0) * (r + 1)
        sums.append(peers.allsum(a, b))
    return [[s.tolist(), str(s.dtype), list(s.shape)] for pair in sums for s in pair]

print(json.dumps(run(3, 10, work)))
"""
    )
    for i in range(5):
        a, b = found[2 * i], found[2 * i + 1]
        assert a == [np.full((2, 3), 3 * i + 3.0).tolist(), "float64", [2, 3]]
        assert b == [(np.arange(4.0) * 6).tolist(), "float64", [4]]


def test_sums_of_other_dtypes_never_overwrite_a_part_still_read():
    """float32 and float64 sums in turns, in three processes, one of which reads each
    sum 5 ms late: a faster process's next part must not land where the late one is
    still reading (each part starts at the same byte whatever the dtype)."""
    found = fresh_python(
        """
import json, time
import numpy as np
from cnn.parallel import Peers, run

exchange = Peers._exchange

def late_exchange(self):
    exchange(self)
    if self.rank == 2:
        time.sleep(0.005)

Peers._exchange = late_exchange

def work(peers):
    sums = []
    for i in range(8):
        dtype = np.float64 if i // 2 % 2 else np.float32  # both dtypes in both banks
        sums.append(peers.allsum(np.full(6, peers.rank + 10 * i, dtype))[0].tolist())
    return sums

print(json.dumps(run(3, 6, work)))
"""
    )
    assert found == [[3.0 + 30 * i] * 6 for i in range(8)]


@pytest.mark.parametrize("caller_sleeps", [0.0, 0.2])
def test_a_failing_process_stops_the_training_with_its_error(caller_sleeps):
    """A layer that fails only in a forked process: the training stops with
    PeerStopped, which carries that process's traceback; also when the calling process
    is slow, so that the copy has exited before the caller tells it its part is written
    (the write to a closed pipe raised BrokenPipeError instead)."""
    found = fresh_python(
        f"""
import json, os, time
import numpy as np
import cnn
from cnn import Flatten, FullyConnectedLayer, Layer
from cnn.model import Sequential
from cnn.parallel import PeerStopped

class FailsElsewhere(Layer):
    data_parallel = True
    def __init__(self):
        super().__init__()
        self.pid = os.getpid()
    def forward(self, X, training=True):
        if os.getpid() != self.pid:
            raise ArithmeticError("boom in the copy")
        time.sleep({caller_sleeps})
        return X
    def gradient(self, dout, input_grad=True):
        return dout

model = Sequential([FailsElsewhere(), Flatten(), FullyConnectedLayer(16, 10)],
                   input_shape=(1, 4, 4))
X = np.random.default_rng(0).random((8, 1, 4, 4))
try:
    model.train(X, np.arange(8), epochs=1, batch_size=4, verbose=0, processes=2)
    print(json.dumps("no error"))
except PeerStopped as error:
    print(json.dumps(str(error)))
"""
    )
    assert "training process 1 stopped" in found
    assert "ArithmeticError: boom in the copy" in found


def test_diverging_parallel_training_raises_floating_point_error():
    """Every process sees the whole batch's loss, so all stop together when it
    diverges, and the caller gets the one-process error."""
    found = fresh_python(
        """
import json
import cnn
(X, y), _ = cnn.load_mnist_prepared()
model = cnn.SimpleCNN(learning_rate=1e6, lr_decay=1.0)
try:
    model.train(X[:16], y[:16], epochs=3, batch_size=4, verbose=0, processes=2)
    print(json.dumps("no error"))
except FloatingPointError as error:
    print(json.dumps(str(error)))
"""
    )
    assert "training diverged" in found and "smaller learning rate" in found


def _tiny(*layers):
    return Sequential(
        [*layers, Flatten(), FullyConnectedLayer(16, 10)], input_shape=(1, 4, 4)
    )


def test_what_cannot_be_split_is_refused_before_any_fork():
    """Refused with a message that says what to change: a layer that does not say it
    can be split, a batch with fewer images than processes, a process count below
    one."""
    X, y = np.random.default_rng(0).random((9, 1, 4, 4)), np.arange(9)

    class Mine(Layer):
        def forward(self, X, training=True):
            return X

        def gradient(self, dout, input_grad=True):
            return dout

    with pytest.raises(ValueError, match=r"Mine.data_parallel = True"):
        _tiny(Mine()).train(X, y, epochs=1, batch_size=4, verbose=0, processes=2)
    # 9 images in batches of 4: the last batch has one image
    with pytest.raises(ValueError, match=r"at least 2 images.*one batch has 1"):
        _tiny(ReLU()).train(X, y, epochs=1, batch_size=4, verbose=0, processes=2)
    with pytest.raises(ValueError, match=r"processes must be an integer >= 1"):
        _tiny(ReLU()).train(X, y, epochs=1, batch_size=4, verbose=0, processes=0)


def test_training_refuses_to_fork_a_process_that_imported_jax():
    """This test session has imported JAX (conftest): forking it could deadlock."""
    assert "jax" in sys.modules
    X, y = np.random.default_rng(0).random((8, 1, 4, 4)), np.arange(8)
    model = _tiny(ReLU())
    with pytest.raises(RuntimeError, match=r"imported JAX, which is not fork-safe"):
        model.train(X, y, epochs=1, batch_size=4, verbose=0, processes=2)
    assert all(layer.peers is None for layer in model.layers)


def test_built_in_layers_say_they_can_be_split():
    """Every layer of the package may be split; the protocol's default refuses."""
    assert not Layer.data_parallel
    for layer in (ConvLayer, BatchNorm, ReLU, Flatten, FullyConnectedLayer):
        assert layer.data_parallel
    assert all(
        layer.data_parallel
        for layer in cnn.deep_cnn(seed=0).layers + cnn.SimpleCNN().training_steps()
    )
