"""Where images are decoded: on the engine's decoding threads, or, with `decode_processes`, in
processes of their own that those threads hand the work to. By default (Settings.
decoding_in_processes) in processes where the model runs off this host's CPU (a GPU, Triton):
there the work around the model sets the speed (on two cores, with a near-free stand-in model,
one stream 1.18-1.39x the threads'); on threads where the model runs on the CPU, whose cores it
keeps busy itself (the real model on two cores: the same throughput either way).

Why processes: one server process keeps only ~1.4 of two cores busy whatever its work costs
(README, Pipeline cost): its Python work runs under one interpreter lock, and the decoding
threads' share of it (the inset detector's many small numpy calls, the content-view test, the
codecs' wrappers) is the largest. In a process of its own that work has a lock of its own, and
the server's threads only wait on a pipe. Unlike `--workers`, the model, its batches and the
index stay one: on a GPU host, one copy of the model fed in large batches by every core.

Each decoding thread (core/threads.py: PriorityThreadPool, `decode_workers` per priority) has a
process of its own, started with the engine (spawned, not forked: gRPC's threads do not survive
a fork): a high-priority call never waits for a bulk one, and the bulk threads' processes run
niced (`low_priority_nice`) as the threads do.

What crosses: the image's bytes one way and its header facts and model inputs (a 288x288x3
array, two with a view) the other, through two blocks of shared memory each process has
(`_Slots`; the pipe carries only sizes, facts and errors). Bytes or inputs too large for a
block (an image over IN_SLOT_BYTES) go through the pipe instead, as everything does where the
blocks cannot be had: their memory is reserved when they are made, so a full /dev/shm is a
warning at start, never a SIGBUS at a write (Docker's default /dev/shm is 64 MB; the blocks
take 2 MiB per process). Pickled through the pipe, each image cost ~0.9 ms of CPU in the two
processes (a microbenchmark: 100 KB in, one 288x288x3 array out; 2-core AMD EPYC VM,
2026-12-06), through the blocks ~0.15. The blocks are the server's: it makes them and removes
them when it stops (after a kill -9 of it, multiprocessing's resource tracker does).

A process that dies (the kernel's OOM killer, a codec's crash on a hostile image) fails the
image it held, if any, with UNAVAILABLE and RetryInfo, and is started again when its thread
next needs it (that image waits for the start, ~1-4 s); the processes end with the server:
their pipe closes, a kill -9 included (one busy with an image ends once it is done).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
from multiprocessing import shared_memory
from typing import Protocol

import numpy as np

from imgdedup.core.errors import DecoderUnavailable
from imgdedup.core.images import ImageError, ImageFacts
from imgdedup.core.model_inputs import InputMaker, ModelInputs
from imgdedup.core.priority import Priority

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0
# Each decoding process's shared blocks: the image's bytes (larger ones go through the pipe),
# and its model inputs (the whole image and its view: two 288x288x3 arrays take 0.5 MB).
IN_SLOT_BYTES = 1 << 20
OUT_SLOT_BYTES = 1 << 20


class Decoder(Protocol):
    # InputMaker.__call__ where the decoder runs it: the header probed unless `facts` are
    # given, the model inputs made unless `decode` is false
    def __call__(self, data: bytes, priority: Priority, facts: ImageFacts | None = None, *, decode: bool = True) -> tuple[ImageFacts, ModelInputs | None]: ...

    def wait_ready(self) -> None: ...  # blocks until it can decode

    def close(self) -> None: ...


class InThreadDecoder:
    """Decode on the calling thread (one of the engine's decoding threads)."""

    def __init__(self, make: InputMaker) -> None:
        self._make = make

    def __call__(self, data: bytes, priority: Priority, facts: ImageFacts | None = None, *, decode: bool = True) -> tuple[ImageFacts, ModelInputs | None]:
        return self._make(data, facts, decode=decode)

    def wait_ready(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessDecoder:
    """Decode in `workers` processes per priority level; a calling thread takes an idle one of
    its level (there are as many as the level has threads, so it never waits for one)."""

    def __init__(self, make: InputMaker, *, workers: int, low_nice: int = 0) -> None:
        self._idle: dict[Priority, queue.SimpleQueue[_Child]] = {level: queue.SimpleQueue() for level in Priority}
        self._children: list[_Child] = []
        levels = [(Priority.HIGH, "decoder", 0), (Priority.LOW, "decoder-low", low_nice)]
        try:
            for level, name, nice in levels:
                for n in range(workers):
                    child = _Child(make, f"{name}_{n}", nice)
                    self._children.append(child)
                    self._idle[level].put(child)
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        """Until every process has started (they start side by side: each imports numpy and
        OpenCV, ~1 s)."""
        for child in self._children:
            child.wait_ready()
        log.info("decoding in %d processes (%d per priority level)", len(self._children), len(self._children) // 2)

    def __call__(self, data: bytes, priority: Priority, facts: ImageFacts | None = None, *, decode: bool = True) -> tuple[ImageFacts, ModelInputs | None]:
        idle = self._idle[priority]
        child = idle.get()
        try:
            return child.call(data, facts, decode)
        finally:
            idle.put(child)

    def close(self) -> None:
        for child in self._children:
            child.remove()


class _Child:
    """One decoding process and this process's end of its pipe; restarted when it dies."""

    def __init__(self, make: InputMaker, name: str, nice: int) -> None:
        self._make, self.name, self._nice = make, name, nice
        self._slots = _Slots.create(name)  # kept when the process is started again; None: the pipe alone
        try:
            self._start()
        except BaseException:
            if self._slots is not None:
                self._slots.remove()
            raise

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        args = (child_end, self._make, self.name, self._nice, self._slots.names if self._slots is not None else None)
        self._process = context.Process(target=_serve, args=args, name=self.name, daemon=True)
        self._process.start()
        child_end.close()
        self._ready = False

    def wait_ready(self) -> None:
        if self._ready:
            return
        if not self._conn.poll(_START_TIMEOUT_S):
            raise RuntimeError(f"decoding process {self.name} did not start within {_START_TIMEOUT_S:.0f} s")
        if self._conn.recv() != "ready":
            raise RuntimeError(f"decoding process {self.name} failed to start")
        self._ready = True

    def call(self, data: bytes, facts: ImageFacts | None, decode: bool) -> tuple[ImageFacts, ModelInputs | None]:
        if not self._process.is_alive():  # ended while idle: no image lost, start another
            log.warning("decoding process %s had ended (exit code %s); started again", self.name, self._process.exitcode)
            self._restart()
        try:
            self.wait_ready()
            in_slot = self._slots is not None and self._slots.put(data)
            self._conn.send((facts, decode, len(data) if in_slot else -1))
            if not in_slot:
                self._conn.send_bytes(data)
            reply = self._conn.recv()
        except (EOFError, OSError, RuntimeError) as exc:
            code = self._process.exitcode
            self._restart()
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}" if code is not None else str(exc) or type(exc).__name__
            log.warning("decoding process %s ended (%s) while decoding an image; started again", self.name, how)
            raise DecoderUnavailable(f"the process decoding this image ended ({how}); the image was not stored: retry") from None
        kind, *rest = reply
        if kind == "ok":  # facts, and the inputs' shapes in the output block (None: not decoded), inset
            facts, shapes, inset = rest
            if shapes is None:
                return facts, None
            assert self._slots is not None
            return facts, ModelInputs(self._slots.take(shapes), inset=inset)
        if kind == "ok-pickled":  # facts, inputs
            return rest[0], rest[1]
        if kind == "image":
            raise ImageError(*rest)
        raise RuntimeError(f"decoding failed in {self.name}: {rest[0]}")

    def _restart(self) -> None:
        self.stop()
        self._start()

    def stop(self) -> None:
        try:
            self._conn.close()  # the process sees the pipe close and ends
        except OSError:
            pass
        self._process.join(2.0)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(2.0)

    def remove(self) -> None:
        """Stop the process and remove its shared blocks (the server is stopping)."""
        self.stop()
        if self._slots is not None:
            self._slots.remove()


class _Slots:
    """A decoding process's two shared-memory blocks, made (create) and removed (remove) by the
    server, attached to by the process: the image's bytes go in `inputs`, its model inputs come
    back in `outputs`. One image at a time (a process serves one decoding thread)."""

    def __init__(self, inputs: shared_memory.SharedMemory, outputs: shared_memory.SharedMemory) -> None:
        self.inputs, self.outputs = inputs, outputs

    @classmethod
    def create(cls, name: str) -> _Slots | None:
        """Two new blocks, their memory reserved (posix_fallocate: a full /dev/shm fails here,
        not with a SIGBUS at a write); None, and a warning, if they cannot be had."""
        made: list[shared_memory.SharedMemory] = []
        try:
            for size in (IN_SLOT_BYTES, OUT_SLOT_BYTES):
                made.append(shared_memory.SharedMemory(create=True, size=size))
                os.posix_fallocate(made[-1]._fd, 0, size)  # the one handle to the block's file
        except OSError as exc:
            log.warning("decoding process %s: no shared memory (%s); images and inputs go through its pipe", name, exc)
            for block in made:
                _discard(block)
            return None
        return cls(made[0], made[1])

    @classmethod
    def attach(cls, names: tuple[str, str]) -> _Slots:
        return cls(shared_memory.SharedMemory(name=names[0]), shared_memory.SharedMemory(name=names[1]))

    @property
    def names(self) -> tuple[str, str]:
        return self.inputs.name, self.outputs.name

    def put(self, data: bytes) -> bool:
        """The image's bytes into the input block, if they fit."""
        if len(data) > self.inputs.size:
            return False
        self.inputs.buf[: len(data)] = data
        return True

    def get(self, size: int) -> bytes:
        return bytes(self.inputs.buf[:size])

    def store(self, tensors: list[np.ndarray]) -> list[tuple[int, ...]] | None:
        """The model inputs into the output block, one after another; their shapes, or None if
        they do not fit (they go through the pipe)."""
        if sum(t.nbytes for t in tensors) > self.outputs.size or any(t.dtype != np.uint8 for t in tensors):
            return None
        offset = 0
        for t in tensors:
            np.ndarray(t.shape, np.uint8, buffer=self.outputs.buf, offset=offset)[...] = t
            offset += t.nbytes
        return [t.shape for t in tensors]

    def take(self, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Copies of the model inputs `store` left in the output block (it is written again by
        the next image)."""
        out, offset = [], 0
        for shape in shapes:
            view = np.ndarray(shape, np.uint8, buffer=self.outputs.buf, offset=offset)
            out.append(view.copy())
            offset += view.nbytes
            del view  # no export of the block may outlive this call (close() refuses then)
        return out

    def remove(self) -> None:
        for block in (self.inputs, self.outputs):
            _discard(block)


def _discard(block: shared_memory.SharedMemory) -> None:
    try:
        block.close()
        block.unlink()
    except (OSError, BufferError):  # closing must not raise
        log.warning("could not remove shared memory %s", block.name, exc_info=True)


def _serve(conn, make: InputMaker, name: str, nice: int, slot_names: tuple[str, str] | None) -> None:
    """A decoding process: answer each (facts or None, decode, size) with ("ok", facts, shapes,
    inset) (the inputs in the output block; shapes None: not decoded), ("ok-pickled", facts,
    inputs), or ("image", reason, message), until the pipe closes. Size -1: the bytes follow on
    the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the server's to handle
    from imgdedup.core.threads import name_os_thread

    threading.current_thread().name = name
    name_os_thread()
    if nice > 0:
        os.nice(nice)
    slots = _Slots.attach(slot_names) if slot_names is not None else None
    conn.send("ready")
    while True:
        try:
            facts, decode, size = conn.recv()
            data = conn.recv_bytes() if slots is None or size < 0 else slots.get(size)
        except (EOFError, OSError):
            return
        try:
            facts, inputs = make(data, facts, decode=decode)
            if inputs is None:
                reply = ("ok", facts, None, False)
            else:
                shapes = slots.store(inputs.tensors) if slots is not None else None
                reply = ("ok", facts, shapes, inputs.inset) if shapes is not None else ("ok-pickled", facts, inputs)
        except ImageError as exc:
            reply = ("image", exc.reason, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the caller as an internal error
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


def make_decoder(settings, make: InputMaker, *, processes: bool) -> Decoder:
    if processes:
        return ProcessDecoder(make, workers=settings.decode_workers, low_nice=settings.low_priority_nice)
    return InThreadDecoder(make)
