"""Running exported ``slm`` graphs in ONNX Runtime: timing a decode step or a
prefill (what decode latency is), and greedy generation from the graphs.

Decode latency on a device is the time of one decode step at ``batch_size``
after ``context_length`` tokens: the step's inputs are states of that
context (full-attention caches of ``context_length`` entries; values are
random, which does not change the work done) and the token at position
``context_length``. Prefill latency is the time of one prefill call on a
prompt of ``context_length`` tokens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

#: the phases a latency can be taken of
PHASES = ("decode", "prefill")
DEFAULT_CONTEXT_LENGTH = 512


def session(path: str | os.PathLike, threads: int = 1, graph_optimization_level: str = "all"):
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads, run sequentially."""
    from nas.profilers.onnxruntime import cpu_session

    return cpu_session(path, threads, graph_optimization_level)


def graph_kind(sess) -> str:
    """``decode`` or ``prefill``, from the graph's metadata."""
    return sess.get_modelmeta().custom_metadata_map.get("nas.slm.graph", "")


def decode_feed(sess, batch_size: int, context_length: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of one decode step after ``context_length`` tokens (random states)."""
    rng = np.random.default_rng(seed)
    feed: dict[str, np.ndarray] = {}
    for spec in sess.get_inputs():
        if spec.name == "token":
            feed[spec.name] = np.zeros(batch_size, dtype=np.int64)
        elif spec.name == "position":
            feed[spec.name] = np.array([context_length], dtype=np.int64)
        else:
            shape = [batch_size if d == "batch" else context_length if d == "past" else d for d in spec.shape]
            feed[spec.name] = rng.standard_normal(shape).astype(np.float32) * 0.1
    return feed


class SlmTimer:
    """A loaded decode or prefill graph; calling it with ``runs`` times that
    many calls and returns each one's latency in milliseconds."""

    def __init__(self, path: str | os.PathLike, *, threads: int = 1, batch_size: int = 1,
                 context_length: int = DEFAULT_CONTEXT_LENGTH, graph_optimization_level: str = "all",
                 loaded=None):
        """``loaded``: an ONNX Runtime session of ``path`` to share (settings
        that differ only in context or batch time the same session)."""
        self.session = loaded if loaded is not None else session(path, threads, graph_optimization_level)
        kind = graph_kind(self.session)
        if kind == "decode":
            self.feed = decode_feed(self.session, batch_size, context_length)
        elif kind == "prefill":
            prompt = self.session.get_inputs()[0].shape[1]
            if prompt != context_length:
                raise ValueError(f"{str(path)!r} is a prefill graph for {prompt}-token prompts, "
                                 f"not {context_length}")
            self.feed = {"tokens": np.zeros((batch_size, prompt), dtype=np.int64)}
        else:
            raise ValueError(f"{str(path)!r} is not an slm decode or prefill graph")
        self.kind = kind

    def __call__(self, runs: int) -> np.ndarray:
        times = np.empty(runs)
        run, feed = self.session.run, self.feed
        for i in range(runs):
            start = time.perf_counter_ns()
            run(None, feed)
            times[i] = (time.perf_counter_ns() - start) / 1e6
        return times


class OnnxLanguageModel:
    """Greedy generation with exported graphs: the prompt goes through the
    prefill graph when its length is the graph's, otherwise token by token
    through the decode graph; then one decode step per new byte."""

    def __init__(self, decode_path: str | os.PathLike, prefill_path: str | os.PathLike | None = None,
                 threads: int = 1):
        self.decode = session(decode_path, threads)
        self.prefill = session(prefill_path, threads) if prefill_path and Path(prefill_path).is_file() else None
        self.state_names = [spec.name for spec in self.decode.get_inputs()[2:]]

    def _empty_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros([batch if d == "batch" else 0 if d == "past" else d for d in spec.shape], np.float32)
                for spec in self.decode.get_inputs()[2:]]

    def _step(self, token: np.ndarray, position: int, states: list[np.ndarray]):
        out = self.decode.run(None, {"token": token.astype(np.int64), "position": np.array([position], np.int64),
                                     **dict(zip(self.state_names, states))})
        return out[0], out[1:]

    def logits_and_states(self, prompt: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits after the prompt ``[B, T]`` (int bytes) and the states for position ``T``."""
        prompt = np.asarray(prompt, dtype=np.int64)
        if self.prefill is not None and self.prefill.get_inputs()[0].shape[1] == prompt.shape[1]:
            out = self.prefill.run(None, {"tokens": prompt})
            return out[0], out[1:]
        states = self._empty_states(prompt.shape[0])
        for t in range(prompt.shape[1]):
            logits, states = self._step(prompt[:, t], t, states)
        return logits, states

    def generate(self, prompt: bytes | np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuation ``[B, new_tokens]`` of ``prompt`` (bytes, or ``[B, T]`` ints)."""
        if isinstance(prompt, (bytes, bytearray)):
            prompt = np.frombuffer(bytes(prompt), dtype=np.uint8)[None].astype(np.int64)
        logits, states = self.logits_and_states(prompt)
        position, out = prompt.shape[1], []
        for _ in range(new_tokens):
            token = logits.argmax(-1)
            out.append(token)
            logits, states = self._step(token, position, states)
            position += 1
        return np.stack(out, axis=1)
