"""A remote device agent and the profiler that talks to it (kind ``remote``).

On the device: ``nas agent serve --port 8765`` (standard library HTTP, one
request at a time so timings never overlap). The profiler uploads each
exported model once and asks for timed blocks, following the protocol of
:mod:`nas.profilers.protocol`; only inference is timed, never the network.

Settings: ``url`` (e.g. ``http://192.168.1.20:8765``), ``timeout_s``, and
the runtime settings ``threads``, ``batch_size``, ``graph_optimization_level``.

Protocol (JSON answers):
``GET /health``; ``POST /models?threads=&batch_size=&graph_optimization_level=``
with the ONNX bytes as body, answering ``{"model": ID}``;
``POST /models/ID/time?runs=N`` answering ``{"runs_ms": [...]}``;
``DELETE /models/ID``. Errors answer ``{"error": message}`` with 4xx.
"""

from __future__ import annotations

import collections
import hashlib
import json
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np

import nas
from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import register_profiler
from nas.profilers.protocol import InterleavedProfiler, Timer, check_runtime_settings
from nas.profilers.onnxruntime import OnnxRuntimeModel

#: largest model the agent accepts (bytes)
MAX_MODEL_BYTES = 256 * 2**20
#: most models the agent keeps loaded; the least recently used goes first
MAX_LOADED_MODELS = 32
MAX_RUNS_PER_REQUEST = 10_000
DEFAULT_PORT = 8765


# --------------------------------------------------------------------------- #
# The agent (runs on the device)
# --------------------------------------------------------------------------- #
class DeviceAgent(HTTPServer):
    """HTTP server timing uploaded ONNX models with ONNX Runtime on this machine.

    ``DeviceAgent(("127.0.0.1", 0))`` picks a free port (``server_port``);
    ``serve_forever()`` serves until ``shutdown()``.
    """

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _AgentHandler)
        self.models: collections.OrderedDict[str, OnnxRuntimeModel] = collections.OrderedDict()
        self._folder = tempfile.TemporaryDirectory(prefix="nas-agent-")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def load(self, data: bytes, settings: dict) -> str:
        runtime = check_runtime_settings(settings)
        model_id = hashlib.sha256(data + json.dumps(runtime, sort_keys=True).encode()).hexdigest()[:24]
        if model_id not in self.models:
            path = Path(self._folder.name) / f"{model_id}.onnx"
            path.write_bytes(data)
            try:
                self.models[model_id] = OnnxRuntimeModel(path, **runtime)
            finally:
                path.unlink()
            while len(self.models) > MAX_LOADED_MODELS:
                self.models.popitem(last=False)
        self.models.move_to_end(model_id)
        return model_id

    def server_close(self) -> None:
        super().server_close()
        self.models.clear()
        self._folder.cleanup()


class _AgentHandler(BaseHTTPRequestHandler):
    server: DeviceAgent
    timeout = 120  # seconds a client may take to send a request

    def log_message(self, *_args) -> None:  # keep the agent's console quiet
        pass

    def _answer(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _query(self) -> tuple[list[str], dict[str, str]]:
        parsed = urllib.parse.urlparse(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        return [part for part in parsed.path.split("/") if part], query

    def do_GET(self) -> None:
        parts, _ = self._query()
        if parts == ["health"]:
            import onnxruntime

            self._answer(200, {"agent": "nas", "nas": getattr(nas, "__version__", ""),
                               "onnxruntime": onnxruntime.__version__, "models": len(self.server.models)})
        else:
            self._answer(404, {"error": f"unknown path {self.path!r}; try GET /health"})

    def do_POST(self) -> None:
        parts, query = self._query()
        try:
            if parts == ["models"]:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_MODEL_BYTES:
                    self._answer(413 if length else 411, {"error": f"send the ONNX model as the body "
                                                                    f"(1 byte to {MAX_MODEL_BYTES} bytes)"})
                    return
                data = self.rfile.read(length)
                settings = {k: (v if k == "graph_optimization_level" else int(v)) for k, v in query.items()
                            if k in ("threads", "batch_size", "graph_optimization_level")}
                self._answer(200, {"model": self.server.load(data, settings)})
            elif len(parts) == 3 and parts[0] == "models" and parts[2] == "time":
                model = self.server.models.get(parts[1])
                if model is None:
                    self._answer(404, {"error": f"no model {parts[1]!r} is loaded; upload it again"})
                    return
                self.server.models.move_to_end(parts[1])  # in use: evict it last
                runs = int(query.get("runs", "1"))
                if not 1 <= runs <= MAX_RUNS_PER_REQUEST:
                    raise UserInputError(f"runs must be between 1 and {MAX_RUNS_PER_REQUEST}, not {runs}")
                self._answer(200, {"runs_ms": model(runs).tolist()})
            else:
                self._answer(404, {"error": f"unknown path {self.path!r}"})
        except (UserInputError, ValueError) as error:
            self._answer(400, {"error": str(error)})

    def do_DELETE(self) -> None:
        parts, _ = self._query()
        if len(parts) == 2 and parts[0] == "models":
            self.server.models.pop(parts[1], None)
            self._answer(200, {"deleted": parts[1]})
        else:
            self._answer(404, {"error": f"unknown path {self.path!r}"})


def serve(port: int = DEFAULT_PORT, host: str = "127.0.0.1", *, ready: threading.Event | None = None) -> None:
    """Serve the agent on ``host:port`` until interrupted."""
    with DeviceAgent((host, port)) as agent:
        print(f"nas agent listening on {agent.url} (Ctrl-C stops it)", flush=True)
        if ready is not None:
            ready.set()
        try:
            agent.serve_forever()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- #
# The profiler (runs where the search runs)
# --------------------------------------------------------------------------- #
@register_profiler("remote")
class RemoteProfiler(InterleavedProfiler):
    """Times architectures on a machine running ``nas agent serve``."""

    def __init__(self, device):
        super().__init__(device)
        url = device.settings.get("url")
        if not url or not str(url).startswith(("http://", "https://")):
            raise UserInputError(f"device {device.name!r} (kind remote) needs setting url, e.g. "
                                 f"http://192.168.1.20:{DEFAULT_PORT}, not {url!r}")
        self.url = str(url).rstrip("/")
        self.timeout_s = float(device.settings.get("timeout_s", 300))

    def _request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> dict:
        request = urllib.request.Request(self.url + path, data=body, method=method,
                                         headers={"Content-Type": "application/octet-stream"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", "")
            except ValueError:
                message = error.reason
            raise UserInputError(f"the agent at {self.url} refused {method} {path}: {message}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DeviceUnavailableError(
                f"cannot reach the nas agent of device {self.device.name!r} at {self.url} ({reason}). Start it "
                f"on the device with 'nas agent serve --host 0.0.0.0 --port PORT', check the url and the "
                f"firewall, or pick a catalog device ('nas devices list').") from None

    def check_available(self) -> None:
        health = self._request("GET", "/health", timeout=10)
        if health.get("agent") != "nas":
            raise DeviceUnavailableError(f"{self.url} answers, but not as a nas agent; start 'nas agent serve' "
                                         f"there or fix the device's url")

    def load(self, onnx_path: Path) -> Timer:
        query = urllib.parse.urlencode(self.runtime)
        model_id = self._request("POST", f"/models?{query}", Path(onnx_path).read_bytes())["model"]

        def time_runs(runs: int) -> np.ndarray:
            return np.asarray(self._request("POST", f"/models/{model_id}/time?runs={int(runs)}")["runs_ms"], float)

        return time_runs
