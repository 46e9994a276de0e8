"""A remote device agent and the profiler that talks to it (kind ``remote``).

On the device: ``nas agent serve --port 8765``. The profiler uploads each
exported model and asks for timed blocks, following the protocol of
:mod:`nas.profilers.protocol`; only inference is timed, never the network.

A device farm: a catalog device may list several agents (several boards of
the same kind). Work is spread over the agents that answer; the work of an
agent that dies mid-measurement is given to another, and every finished cell
is handed on the moment it is done.

Settings: ``url`` (e.g. ``http://192.168.1.20:8765``) or ``agents`` (a list
of such URLs), ``token_file`` (a file holding the agents' token; default
``$NAS_AGENT_TOKEN``), ``timeout_s``, and the runtime settings ``threads``,
``batch_size``, ``graph_optimization_level``.

The agent serves one measurement at a time, so concurrent clients never
disturb each other's timings: a client takes a lease (``POST /lease``),
times its cells, and gives it back; another client is told the agent is busy
(503 with ``Retry-After``) and waits. An agent listening on anything but
loopback requires a token (``Authorization: Bearer TOKEN``, compared in
constant time), read from a file or the environment, never the command line.

Protocol (JSON answers): ``GET /health`` (no token needed);
``POST /lease`` answering ``{"lease": ID}``; ``DELETE /lease/ID``;
``POST /models?threads=&batch_size=&graph_optimization_level=`` with the
ONNX bytes as body, answering ``{"model": ID}``;
``POST /models/ID/time?runs=N`` answering ``{"runs_ms": [...]}``;
``DELETE /models/ID``. Requests under a lease carry ``X-Nas-Lease: ID``.
Errors answer ``{"error": message}`` with 4xx/5xx.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import ipaddress
import json
import os
import queue
import secrets
import stat
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import nas
from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import register_profiler
from nas.profilers.base import LatencyMeasurement
from nas.profilers.protocol import InterleavedProfiler, Timer, check_runtime_settings

#: largest model the agent accepts by default (bytes)
MAX_MODEL_BYTES = 256 * 2**20
#: most models the agent keeps loaded; the least recently used goes first
MAX_LOADED_MODELS = 32
MAX_RUNS_PER_REQUEST = 10_000
DEFAULT_PORT = 8765
#: environment variable holding the agent token (agent and profiler)
TOKEN_ENV = "NAS_AGENT_TOKEN"
#: a lease unused this long (seconds) is given up, so a client that died never blocks the agent
LEASE_IDLE_S = 60.0
#: shortest token accepted (characters)
MIN_TOKEN_LENGTH = 16


class NotAnAgentError(UserInputError):
    """A URL that answers, but not as a nas agent (a wrong URL, not a device that is down)."""


class AgentBusyError(DeviceUnavailableError):
    """The agent is measuring for another client."""


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path``; a missing, empty or world-readable file is a :class:`UserInputError`."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as error:
        raise UserInputError(f"token file {str(path)!r} cannot be read ({error.strerror}); create it with "
                             f"'python -c \"import secrets; print(secrets.token_urlsafe(32))\" > {path}' and "
                             f"'chmod 600 {path}'") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise UserInputError(f"token file {str(path)!r} is readable by every user of this machine; "
                             f"run 'chmod 600 {path}'")
    if len(token) < MIN_TOKEN_LENGTH:
        raise UserInputError(f"token file {str(path)!r} holds a token of {len(token)} characters; use at least "
                             f"{MIN_TOKEN_LENGTH} (e.g. python -c \"import secrets; print(secrets.token_urlsafe(32))\")")
    return token


def token_from(token_file: str | os.PathLike | None = None) -> str | None:
    """The token from ``token_file`` when given, else from ``$NAS_AGENT_TOKEN``, else ``None``."""
    if token_file:
        return read_token_file(token_file)
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise UserInputError(f"${TOKEN_ENV} holds a token of {len(token)} characters; use at least "
                             f"{MIN_TOKEN_LENGTH}")
    return token or None


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or address) reaches only this machine."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- #
# The agent (runs on the device)
# --------------------------------------------------------------------------- #
class DeviceAgent(ThreadingHTTPServer):
    """HTTP server timing uploaded ONNX models with ONNX Runtime on this machine.

    ``DeviceAgent(("127.0.0.1", 0))`` picks a free port (``server_port``);
    ``serve_forever()`` serves until ``shutdown()``. ``token``: required of
    every client when set (and refused when missing on a non-loopback
    address). ``max_upload_bytes``: largest model accepted. Requests are
    answered on their own threads, but models are loaded and timed one
    request at a time, and under a lease by one client at a time.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, token: str | None = None,
                 max_upload_bytes: int = MAX_MODEL_BYTES):
        if token is None and not is_loopback(address[0]):
            raise UserInputError(f"the agent would listen on {address[0]}, which other machines reach, without a "
                                 f"token; pass --token-file FILE (or set ${TOKEN_ENV}), or listen on 127.0.0.1")
        super().__init__(address, _AgentHandler)
        self.token = token
        self.max_upload_bytes = int(max_upload_bytes)
        self.models: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._folder = tempfile.TemporaryDirectory(prefix="nas-agent-")
        self._timing = threading.Lock()  # one load or timed block at a time
        self._lease_lock = threading.Lock()
        self.lease: str | None = None
        self._lease_used = 0.0
        self._lease_since = 0.0
        self.active_timings = 0
        self.peak_timings = 0  # the most timings ever run at once (1 by design)
        self.busy_answers = 0

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    # leases ------------------------------------------------------------------
    def take_lease(self, current: str | None) -> str | None:
        """A lease for the asking client, or ``None`` while another client holds one."""
        with self._lease_lock:
            now = time.monotonic()
            if self.lease is not None and self.lease != current and now - self._lease_used < LEASE_IDLE_S:
                return None
            if self.lease != current or self.lease is None:
                self.lease, self._lease_since = secrets.token_hex(12), now
            self._lease_used = now
            return self.lease

    def admits(self, lease: str | None) -> bool:
        """Whether a request under ``lease`` may load or time now (renewing the lease)."""
        with self._lease_lock:
            now = time.monotonic()
            if self.lease is not None and now - self._lease_used >= LEASE_IDLE_S:
                self.lease = None  # its client went quiet
            if self.lease is None:
                return True
            if lease is not None and hmac.compare_digest(lease, self.lease):
                self._lease_used = now
                return True
            return False

    def give_back(self, lease: str) -> None:
        with self._lease_lock:
            if self.lease is not None and hmac.compare_digest(lease, self.lease):
                self.lease = None

    def busy_for_s(self) -> float:
        return time.monotonic() - self._lease_since if self.lease is not None else 0.0

    # models ------------------------------------------------------------------
    def load(self, data: bytes, settings: dict) -> str:
        from nas.profilers.onnxruntime import OnnxRuntimeModel

        runtime = check_runtime_settings(settings)
        model_id = hashlib.sha256(data + json.dumps(runtime, sort_keys=True).encode()).hexdigest()[:24]
        if model_id not in self.models:
            path = Path(self._folder.name) / f"{model_id}.onnx"
            path.write_bytes(data)
            try:
                self.models[model_id] = OnnxRuntimeModel(path, **runtime)
            except UserInputError:
                raise
            except Exception as error:  # anything a broken model makes ONNX Runtime or numpy raise
                raise UserInputError(f"the model could not be loaded: {type(error).__name__}: {error}") from None
            finally:
                path.unlink(missing_ok=True)
            while len(self.models) > MAX_LOADED_MODELS:
                self.models.popitem(last=False)
        self.models.move_to_end(model_id)
        return model_id

    def timed(self, work: Callable[[], dict]) -> dict:
        """Run ``work`` alone: no other load or timing runs meanwhile."""
        with self._timing:
            self.active_timings += 1
            self.peak_timings = max(self.peak_timings, self.active_timings)
            try:
                return work()
            finally:
                self.active_timings -= 1

    def server_close(self) -> None:
        super().server_close()
        self.models.clear()
        self._folder.cleanup()


class _AgentHandler(BaseHTTPRequestHandler):
    server: DeviceAgent
    timeout = 120  # seconds a client may take to send a request
    protocol_version = "HTTP/1.0"

    def log_message(self, *_args) -> None:  # keep the agent's console quiet
        pass

    def _answer(self, status: int, payload: dict, headers: dict | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _query(self) -> tuple[list[str], dict[str, str]]:
        parsed = urllib.parse.urlparse(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        return [part for part in parsed.path.split("/") if part], query

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return True
        self._answer(401, {"error": "this agent requires a token: give the device setting token_file (or set "
                                    f"${TOKEN_ENV}) to the agent's token"},
                     {"WWW-Authenticate": "Bearer"})
        return False

    def _busy(self) -> None:
        self.server.busy_answers += 1
        self._answer(503, {"error": f"busy: measuring for another client for {self.server.busy_for_s():.0f} s; "
                                    f"one measurement runs at a time so timings never overlap",
                           "busy": True}, {"Retry-After": "1"})

    def _handle(self, method: str) -> None:
        try:
            parts, query = self._query()
            if method == "GET" and parts == ["health"]:
                self._health()
            elif not self._authorised():
                return
            else:
                self._route(method, parts, query)
        except UserInputError as error:
            self._answer(400, {"error": str(error)})
        except ValueError as error:
            self._answer(400, {"error": f"bad request: {error}"})
        except Exception as error:  # never let one request take the agent down
            self._answer(500, {"error": f"the agent failed: {type(error).__name__}: {error}"})

    def _health(self) -> None:
        import onnxruntime

        self._answer(200, {"agent": "nas", "nas": getattr(nas, "__version__", ""),
                           "onnxruntime": onnxruntime.__version__, "models": len(self.server.models),
                           "token_required": self.server.token is not None,
                           "busy": self.server.lease is not None and not self.server.admits(None),
                           "max_upload_bytes": self.server.max_upload_bytes})

    def _route(self, method: str, parts: list[str], query: dict[str, str]) -> None:
        lease = self.headers.get("X-Nas-Lease")
        if method == "POST" and parts == ["lease"]:
            granted = self.server.take_lease(lease)
            if granted is None:
                self._busy()
            else:
                self._answer(200, {"lease": granted, "idle_s": LEASE_IDLE_S})
        elif method == "DELETE" and len(parts) == 2 and parts[0] == "lease":
            self.server.give_back(parts[1])
            self._answer(200, {"released": True})
        elif method == "POST" and parts == ["models"]:
            length = int(self.headers.get("Content-Length") or 0)
            limit = self.server.max_upload_bytes
            if not 0 < length <= limit:
                self.close_connection = True  # the body is not read
                self._answer(413 if length else 411, {"error": f"send the ONNX model as the body (1 byte to "
                                                               f"{limit} bytes), not {length} bytes"})
                return
            data = self.rfile.read(length)
            if not self.server.admits(lease):
                self._busy()
                return
            settings = {k: (v if k == "graph_optimization_level" else int(v)) for k, v in query.items()
                        if k in ("threads", "batch_size", "graph_optimization_level")}
            self._answer(200, self.server.timed(lambda: {"model": self.server.load(data, settings)}))
        elif method == "POST" and len(parts) == 3 and parts[0] == "models" and parts[2] == "time":
            model = self.server.models.get(parts[1])
            if model is None:
                self._answer(404, {"error": f"no model {parts[1]!r} is loaded; upload it again"})
                return
            runs = int(query.get("runs", "1"))
            if not 1 <= runs <= MAX_RUNS_PER_REQUEST:
                raise UserInputError(f"runs must be between 1 and {MAX_RUNS_PER_REQUEST}, not {runs}")
            if not self.server.admits(lease):
                self._busy()
                return
            self.server.models.move_to_end(parts[1])  # in use: evict it last
            self._answer(200, self.server.timed(lambda: {"runs_ms": model(runs).tolist()}))
        elif method == "DELETE" and len(parts) == 2 and parts[0] == "models":
            self.server.models.pop(parts[1], None)
            self._answer(200, {"deleted": parts[1]})
        else:
            self._answer(404, {"error": f"unknown path {method} {self.path!r}; try GET /health"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


def serve(port: int = DEFAULT_PORT, host: str = "127.0.0.1", *, token: str | None = None,
          max_upload_bytes: int = MAX_MODEL_BYTES, ready: threading.Event | None = None) -> None:
    """Serve the agent on ``host:port`` until interrupted (see :class:`DeviceAgent`)."""
    with DeviceAgent((host, port), token=token, max_upload_bytes=max_upload_bytes) as agent:
        guarded = "token required" if token else "no token: this machine only"
        print(f"nas agent listening on {agent.url} ({guarded}; Ctrl-C stops it)", flush=True)
        if ready is not None:
            ready.set()
        try:
            agent.serve_forever()
        except KeyboardInterrupt:
            pass


# --------------------------------------------------------------------------- #
# The profiler (runs where the search runs)
# --------------------------------------------------------------------------- #
class AgentClient:
    """Requests to one agent at ``url``, with its token and the current lease."""

    def __init__(self, url: str, device_name: str, *, token: str | None, timeout_s: float):
        if not str(url).startswith(("http://", "https://")):
            raise UserInputError(f"device {device_name!r} (kind remote): agent url {url!r} must start with http:// "
                                 f"or https://, e.g. http://192.168.1.20:{DEFAULT_PORT}")
        self.url = str(url).rstrip("/")
        self.device_name = device_name
        self.token = token
        self.timeout_s = timeout_s
        self.lease: str | None = None
        self._told_busy = False

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float | None = None) -> dict:
        headers = {"Content-Type": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.lease:
            headers["X-Nas-Lease"] = self.lease
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            try:
                payload = json.loads(error.read())
                message = payload.get("error", "")
            except (ValueError, AttributeError):
                payload, message = {}, error.reason
            if error.code == 503 and payload.get("busy"):
                raise AgentBusyError(f"the agent at {self.url} is {message}") from None
            if error.code == 401:
                raise UserInputError(f"the agent at {self.url} refused {method} {path}: {message}") from None
            if error.code == 404 and not payload:
                raise NotAnAgentError(self._not_an_agent("answers 404 without a nas agent's error")) from None
            raise UserInputError(f"the agent at {self.url} refused {method} {path}: {message}") from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DeviceUnavailableError(
                f"cannot reach the nas agent of device {self.device_name!r} at {self.url} ({reason}). Start it "
                f"on the device with 'nas agent serve --host 0.0.0.0 --token-file FILE', check the url and the "
                f"firewall, or pick a catalog device ('nas devices list').") from None
        try:
            return json.loads(text)
        except ValueError:
            raise NotAnAgentError(self._not_an_agent("answers with something other than JSON")) from None

    def _not_an_agent(self, what: str) -> str:
        return (f"{self.url} (device {self.device_name!r}) {what}: it is not a nas agent. Fix the device's url, "
                f"or start 'nas agent serve' there")

    def check(self) -> None:
        health = self.request("GET", "/health", timeout=10)
        if not isinstance(health, dict) or health.get("agent") != "nas":
            raise NotAnAgentError(self._not_an_agent("answers, but not as a nas agent"))

    def take_lease(self, wait_s: float) -> None:
        """Take the agent's lease, waiting up to ``wait_s`` while another client measures."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.lease = self.request("POST", "/lease", b"")["lease"]
                return
            except AgentBusyError as busy:
                if time.monotonic() >= deadline:
                    raise
                if not self._told_busy:
                    print(f"{busy}; waiting for it", file=sys.stderr, flush=True)
                    self._told_busy = True
                time.sleep(1.0)

    def give_back(self) -> None:
        if self.lease:
            try:
                self.request("DELETE", f"/lease/{self.lease}", timeout=10)
            except UserInputError:  # unreachable or refused: the lease lapses on its own
                pass
            self.lease = None


#: ONNX export is not safe to run from several threads at once
_EXPORT_LOCK = threading.Lock()


@register_profiler("remote")
class RemoteProfiler(InterleavedProfiler):
    """Times architectures on one or several machines running ``nas agent serve``."""

    #: seconds to wait for an agent that measures for another client
    busy_wait_s = 3600.0

    def __init__(self, device):
        super().__init__(device)
        settings = device.settings
        urls = settings.get("agents") or ([settings["url"]] if settings.get("url") else [])
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            raise UserInputError(f"device {device.name!r} (kind remote) needs setting url (e.g. "
                                 f"http://192.168.1.20:{DEFAULT_PORT}) or agents (a list of such urls)")
        token = token_from(settings.get("token_file"))
        timeout_s = float(settings.get("timeout_s", 300))
        self.agents = [AgentClient(u, device.name, token=token, timeout_s=timeout_s) for u in urls]
        self.url = self.agents[0].url
        self._live: list[AgentClient] = list(self.agents)
        self._agent = self.agents[0]

    def check_available(self) -> None:
        """Keep the agents that answer; a URL that answers but is no agent is an error of its own."""
        live, problems = [], []
        for agent in self.agents:
            try:
                agent.check()
                live.append(agent)
            except NotAnAgentError:
                raise
            except DeviceUnavailableError as error:
                problems.append(error)
        if not live:
            raise problems[0] if len(problems) == 1 else DeviceUnavailableError(
                f"none of the {len(self.agents)} agents of device {self.device.name!r} answers: "
                + "; ".join(str(p) for p in problems))
        self._live = live

    def load(self, onnx_path: Path) -> Timer:
        agent = self._agent
        query = urllib.parse.urlencode(self.runtime)
        model_id = agent.request("POST", f"/models?{query}", Path(onnx_path).read_bytes())["model"]

        def time_runs(runs: int) -> np.ndarray:
            return np.asarray(agent.request("POST", f"/models/{model_id}/time?runs={int(runs)}")["runs_ms"], float)

        return time_runs

    def _export_and_load(self, space, arch, folder, name) -> Timer:
        from nas.export import export_arch

        with _EXPORT_LOCK:
            path = export_arch(space, arch, folder / f"{name}.onnx")
        try:
            return self.load(path)
        finally:
            path.unlink(missing_ok=True)

    def _on_agent(self, agent: AgentClient) -> "RemoteProfiler":
        """A profiler of this device that talks to ``agent`` alone."""
        single = object.__new__(RemoteProfiler)
        single.__dict__.update(self.__dict__)
        single.agents = single._live = [agent]
        single._agent = agent
        single.url = agent.url
        return single

    def measure(self, space: str, archs: Sequence, on_measured: Callable[[LatencyMeasurement], None] | None = None
                ) -> list[LatencyMeasurement]:
        archs = list(archs)
        if not archs:
            return []
        if len(self._live) == 1:
            agent = self._live[0]
            agent.take_lease(self.busy_wait_s)
            try:
                return InterleavedProfiler.measure(self._on_agent(agent), space, archs, on_measured)
            finally:
                agent.give_back()
        return self._spread(space, archs, on_measured)

    def _spread(self, space: str, archs: list, on_measured) -> list[LatencyMeasurement]:
        """Measure ``archs`` on every live agent at once; a dead agent's unfinished cells go to the others.

        Finished cells are handed to ``on_measured`` on this thread (the store
        may not be shared between threads) the moment they arrive.
        """
        from nas.search_space import get_space

        search_space = get_space(space)
        keys = [search_space.to_string(search_space.validate(a)) for a in archs]
        results: dict[str, LatencyMeasurement] = {}
        todo: collections.deque[str] = collections.deque(dict.fromkeys(keys))
        by_key = dict(zip(keys, archs))
        arrivals: queue.Queue = queue.Queue()
        lock = threading.Lock()
        share = max(1, -(-len(todo) // (2 * len(self._live))))  # smaller parts than agents: the fast take more
        failures: list[Exception] = []
        fatal: list[BaseException] = []

        def failed(agent: AgentClient, part: list[str], done: set[str], error: Exception) -> None:
            with lock:
                todo.extendleft(k for k in reversed(part) if k not in done)
                failures.append(error)
                if agent in self._live:
                    self._live.remove(agent)
            print(f"agent {agent.url} of {self.device.name} stopped answering ({error}); its "
                  f"{len(part) - len(done)} unfinished cells go to the other agents", file=sys.stderr, flush=True)

        def work(agent: AgentClient) -> None:
            single = self._on_agent(agent)
            while True:
                with lock:
                    part = [todo.popleft() for _ in range(min(share, len(todo)))]
                if not part:
                    return
                done: set[str] = set()

                def arrived(record: LatencyMeasurement) -> None:
                    done.add(record.arch)
                    arrivals.put(record)

                try:
                    agent.take_lease(0)
                except AgentBusyError as busy:  # measuring for another client: leave the part to a free agent
                    with lock:
                        todo.extendleft(reversed(part))
                    if not agent._told_busy:
                        print(f"{busy}; its share goes to the other agents meanwhile", file=sys.stderr, flush=True)
                        agent._told_busy = True
                    time.sleep(1.0)
                    continue
                except (DeviceUnavailableError, NotAnAgentError) as error:
                    failed(agent, part, set(), error)
                    return
                try:
                    try:
                        InterleavedProfiler.measure(single, space, [by_key[k] for k in part], arrived)
                    finally:
                        agent.give_back()
                except (DeviceUnavailableError, NotAnAgentError) as error:  # died or went away: others take over
                    failed(agent, part, done, error)
                    return
                except BaseException as error:  # a refused model, a bug: the caller hears of it
                    with lock:
                        fatal.append(error)
                        todo.clear()
                    return

        while True:
            workers = [threading.Thread(target=work, args=(agent,), daemon=True) for agent in list(self._live)]
            for worker in workers:
                worker.start()
            while any(w.is_alive() for w in workers) or not arrivals.empty():
                try:
                    record = arrivals.get(timeout=0.1)
                except queue.Empty:
                    continue
                results[record.arch] = record
                if on_measured is not None:
                    on_measured(record)
            if fatal:
                raise fatal[0]
            missing = [k for k in todo if k not in results]
            if not missing:
                break
            if not self._live:
                raise DeviceUnavailableError(
                    f"every agent of device {self.device.name!r} stopped answering with {len(missing)} cells "
                    f"unmeasured ({failures[-1]}); the {len(results)} finished ones are kept") from None
        return [results[k] for k in keys]
