"""Local ONNX Runtime profiler (kind ``onnxruntime``): times models on this
machine's CPU with the protocol of :mod:`nas.profilers.protocol`
(interleaved rounds, reference model, outlier rounds rejected, spread kept).

Runtime settings (recorded with every measurement): ``threads`` (intra-op
threads), ``batch_size``, ``graph_optimization_level`` (one of
:data:`nas.profilers.protocol.GRAPH_OPTIMIZATION_LEVELS`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import register_profiler
from nas.profilers.protocol import InterleavedProfiler, Timer, check_runtime_settings


def cpu_session(path: str | os.PathLike, threads: int = 1, graph_optimization_level: str = "all"):
    """An ONNX Runtime CPU session of ``path`` as every timing in this package runs one:
    ``threads`` intra-op threads, one inter-op thread, sequential execution, quiet logs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization_level]
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxRuntimeModel:
    """One ONNX model loaded into an ONNX Runtime session with fixed
    settings; calling it with ``runs`` times that many inferences (ms each).

    The input is random float32 data of the model's input shape with the
    batch dimension set to ``batch_size``.
    """

    def __init__(self, onnx_path: str | os.PathLike, *, threads: int = 1, batch_size: int = 1,
                 graph_optimization_level: str = "all"):
        import onnxruntime as ort

        check_runtime_settings({"threads": threads, "batch_size": batch_size,
                                "graph_optimization_level": graph_optimization_level})
        path = Path(onnx_path)
        if not path.is_file():
            raise UserInputError(f"no ONNX model at {str(path)!r}")
        try:
            self.session = cpu_session(path, threads, graph_optimization_level)
        except Exception as error:  # ONNX Runtime raises its own exception types for bad models
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserInputError(f"{str(path)!r} is not an ONNX model ONNX Runtime can run: {reason}. "
                                 f"Export models with 'nas export' (opset 17).") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserInputError(f"{str(path)!r} has {len(inputs)} inputs; the profiler times models with "
                                 f"exactly one input")
        shape = [batch_size if i == 0 and not isinstance(d, int) else d for i, d in enumerate(inputs[0].shape)]
        if not all(isinstance(d, int) and d > 0 for d in shape):
            raise UserInputError(f"{str(path)!r} has input shape {inputs[0].shape}; only the first "
                                 f"(batch) dimension may be dynamic")
        if inputs[0].type != "tensor(float)":
            raise UserInputError(f"{str(path)!r} takes {inputs[0].type}; the profiler feeds float32 tensors")
        self._feed = {inputs[0].name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        self._run_options = ort.RunOptions()

    def __call__(self, runs: int) -> np.ndarray:
        """Run the model ``runs`` times; each run's latency in milliseconds."""
        times = np.empty(runs)
        run, feed, options = self.session.run, self._feed, self._run_options
        for i in range(runs):
            start = time.perf_counter_ns()
            run(None, feed, options)
            times[i] = (time.perf_counter_ns() - start) / 1e6
        return times


@register_profiler("onnxruntime")
class OnnxRuntimeProfiler(InterleavedProfiler):
    """Times architectures with ONNX Runtime on this machine's CPU."""

    def host(self) -> str:
        from nas.profilers.levels import this_host

        return this_host()

    def check_available(self) -> None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise DeviceUnavailableError(f"device {self.device.name!r} needs the onnxruntime package: "
                                         f"pip install onnxruntime") from None

    def load(self, onnx_path: Path) -> Timer:
        return OnnxRuntimeModel(onnx_path, **self.runtime)

    def load_sequence_model(self, onnx_path: Path, settings: dict) -> Timer:
        from nas.search_space.slm.runtime import SlmTimer

        return SlmTimer(onnx_path, context_length=settings["context_length"], **self.runtime)
