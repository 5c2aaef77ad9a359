"""Data parallelism: one training step computed by several processes, each on its own
rows of every batch, as frameworks train on several devices (PyTorch's
DistributedDataParallel with SyncBatchNorm).

Explained in the chapter *Performance*.

Two threads of one Python process overlap only in the long calls that release the
interpreter's lock; the many short calls of a training step run one at a time.
Processes do not share that lock. So ``train(..., processes=P)``
(:func:`cnn.train.train`) forks ``P - 1`` copies of the process (:func:`run`); each
holds the same model and computes, on one core, the forward and backward passes of its
share of every batch: rows ``n*r//P`` to ``n*(r+1)//P`` of a batch of ``n`` for the
process of rank ``r``. Almost nothing in a training step mixes the images of a batch.
What does is summed over the processes with :meth:`Peers.allsum`:

- batch normalisation's per-channel sums (:class:`cnn.batchnorm.BatchNorm`): the mean
  and the variance in its forward pass, the two sums of its backward pass;
- every parameter's gradient and the loss, once at the end of the step, so that every
  process applies the same update to the same parameters and the copies stay equal.

Dropout draws its mask for the whole batch in every process, from generators that start
equal, and each process keeps its rows; the loss is the mean over the whole batch. The
step is therefore the one-process step, up to the rounding of sums added in another
order. The processes exchange the sums through shared memory, and tell each other that
their part is written with one byte through a pipe.
"""

import mmap
import os
import signal
import sys
import time
import traceback

import numpy as np

#: How long a process waits awake for a peer's part before it blocks on the pipe (a
#: blocked process takes tens of microseconds to wake; each process has its own core).
SPIN_SECONDS = 1e-3


class PeerStopped(RuntimeError):
    """Another process of the training stopped (its error is in the message)."""


class Peers:
    """The processes that train one model together, as one of them sees them.

    Made before the processes fork, so that they share its memory and its pipes; each
    process then calls :meth:`become` with its rank (0 is the process that called
    ``train``).

    Parameters
    ----------
    processes : int
    size : int
        The most numbers that one :meth:`allsum` adds up.
    """

    def __init__(self, processes, size):
        self.processes, self.size, self.rank = processes, size, 0
        self.batch, self.rows = None, slice(None)
        # Two banks used in turn: a process may write its part of the next sum while a
        # slower one still reads this one, but it cannot get two sums ahead, since each
        # sum waits for every process's part.
        banks = 2 * processes * size * 8
        self._memory = mmap.mmap(-1, banks + 8 * processes)  # shared when forked
        self._banks = {}
        # how many sums each process has written its part of
        self._written = np.frombuffer(self._memory, np.int64, processes, offset=banks)
        self._count = 0
        # one pipe per ordered pair (a, b): a writes a byte when its part is there
        self._pipes = {
            (a, b): dict(zip(("read", "write"), os.pipe(), strict=True))
            for a in range(processes)
            for b in range(processes)
            if a != b
        }

    def become(self, rank):
        """Be process ``rank``: keep its ends of the pipes and close the others, so
        that a process that stops closes the only ends its peers read from."""
        self.rank = rank
        for (a, b), ends in self._pipes.items():
            if a != rank:
                os.close(ends.pop("write"))
            if b != rank:
                os.close(ends.pop("read"))

    def close(self):
        """Close this process's ends of the pipes and let go of the shared memory."""
        for ends in self._pipes.values():
            for fd in ends.values():
                os.close(fd)
        self._pipes, self._banks, self._written = {}, {}, None
        self._memory.close()

    def share(self, n):
        """The rows that this process computes of a batch of ``n`` images (a slice),
        which layers find in :attr:`rows`, with ``n`` in :attr:`batch`."""
        P, r = self.processes, self.rank
        self.batch, self.rows = n, slice(n * r // P, n * (r + 1) // P)
        return self.rows

    def allsum(self, *arrays):
        """The sums over the processes of ``arrays``, as new arrays of the same shapes.

        Every process must call it at the same point, with arrays of the same shapes.
        Every process adds the parts in the same order, so all get the same bits.
        """
        dtype = np.result_type(*arrays)
        n = sum(a.size for a in arrays)
        if n > self.size:
            raise ValueError(f"Peers.allsum: {n} numbers; made for {self.size}")
        bank = self._bank(dtype)[self._count % 2]
        self._count += 1
        np.concatenate([a.ravel() for a in arrays], out=bank[self.rank, :n])
        self._exchange()
        total = bank[:, :n].sum(axis=0)
        sums, start = [], 0
        for a in arrays:
            sums.append(total[start : start + a.size].reshape(a.shape))
            start += a.size
        return sums

    def sum_gradients(self, layers, loss):
        """Replace every layer's ``grads`` by their sums over the processes; return the
        sum of ``loss`` (this process's share of the batch's mean loss)."""
        grads = [(layer, name) for layer in layers for name in layer.grads]
        # the gradients' dtype (float32 at least, also where there are none)
        dtype = np.result_type(
            np.float32, *(layer.grads[name] for layer, name in grads)
        )
        *sums, total = self.allsum(
            *(layer.grads[name] for layer, name in grads), np.array([loss], dtype)
        )
        for (layer, name), value in zip(grads, sums, strict=True):
            layer.grads[name] = value
        return float(total[0])

    def _bank(self, dtype):
        """The shared memory as (2 banks, processes, size) numbers of ``dtype``.

        Each process's part starts at the same byte whatever the dtype (room for
        ``size`` float64 numbers), so that sums of different dtypes, one after the
        other, use the same places and never overlap a part a peer still reads.
        """
        dtype = np.dtype(dtype)
        bank = self._banks.get(dtype)
        if bank is None:
            if dtype.itemsize > 8:
                raise TypeError(
                    f"Peers.allsum: numbers of at most 8 bytes; got {dtype}"
                )
            slot = 8 * self.size  # bytes
            bank = self._banks[dtype] = np.ndarray(
                (2, self.processes, self.size),
                dtype,
                buffer=self._memory,
                strides=(self.processes * slot, slot, dtype.itemsize),
            )
        return bank

    def _exchange(self):
        """Tell every peer that this process's part is written; wait until theirs
        are."""
        for (a, b), ends in self._pipes.items():
            if a == self.rank:
                try:
                    os.write(ends["write"], b"\0")
                except BrokenPipeError:
                    # process b has stopped, and closed the pipe's other end
                    raise PeerStopped(f"training process {b} stopped") from None
        # after the bytes: a peer that sees the count finds its byte there already
        self._written[self.rank] = self._count
        for (a, b), ends in self._pipes.items():
            if b != self.rank:
                continue
            # A short wait, awake, for the count: the part is usually there within
            # microseconds, and waking from a blocking read takes tens of them.
            # The read (of a byte sent after the part was written) is what makes
            # the part visible here; the count only saves falling asleep.
            deadline = time.perf_counter() + SPIN_SECONDS
            while self._written[a] < self._count and time.perf_counter() < deadline:
                pass
            if not os.read(ends["read"], 1):
                # the end of the pipe: process a has stopped
                raise PeerStopped(f"training process {a} stopped")


def run(processes, size, work):
    """``work(peers)`` in ``processes`` processes at once: this one (rank 0) and
    ``processes - 1`` forked copies; returns this process's result.

    ``size`` is what :class:`Peers` needs. If a copy fails, this process raises
    :class:`PeerStopped` with its traceback; if this one fails, the copies are stopped.
    """
    if not hasattr(os, "fork"):
        raise RuntimeError(
            "training with processes > 1 forks the process, which this system "
            "cannot do; use processes=1"
        )
    if "jax" in sys.modules:
        # JAX's thread pools do not survive a fork: the copies could deadlock.
        raise RuntimeError(
            "training with processes > 1 forks the process, and this process has "
            "imported JAX, which is not fork-safe; train in a process without JAX, "
            "or with processes=1"
        )
    peers = Peers(processes, size)
    children = {}  # rank -> (pid, the read end of its error pipe)
    try:
        for rank in range(1, processes):
            error_read, error_write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the copy: never returns
                os.close(error_read)
                _child(peers, rank, work, error_write)
            os.close(error_write)
            children[rank] = (pid, error_read)
        peers.become(0)
        result = work(peers)
    except PeerStopped as stopped:
        # the copy that failed has written why before it stopped
        messages = [_stop(*child, kill=True) for child in children.values()]
        report = "\n".join(m for m in messages if m) or "(no message)"
        raise PeerStopped(f"{stopped}:\n{report}") from None
    except BaseException:
        for child in children.values():
            _stop(*child, kill=True)
        raise
    finally:
        peers.close()
    for child in children.values():
        _stop(*child, kill=False)
    return result


def _child(peers, rank, work, error_write):
    """The body of a forked copy: ``work(peers)`` as process ``rank``, then exit (with
    the traceback written to ``error_write`` if it failed)."""
    try:
        peers.become(rank)
        work(peers)
        code = 0
    except BaseException:
        # the tail, which fits in a pipe's buffer: the copy exits at once
        os.write(error_write, traceback.format_exc()[-3000:].encode())
        code = 1
    os._exit(code)  # no clean-up of the parent's state (its files, its kernel)


def _stop(pid, error_read, kill):
    """Wait for the copy ``pid`` to exit (killing it first if ``kill``); return what
    it wrote on failing."""
    if kill:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with os.fdopen(error_read, "rb") as errors:
        return errors.read().decode(errors="replace")
