"""The remote device agent and its profiler, over HTTP on 127.0.0.1."""

import json
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from nas.devices import Device
from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import make_profiler, measure
from nas.profilers.remote import DeviceAgent
from nas.search_space import get_space
from nas.store import MeasurementStore

TINY = dict(warmup_runs=1, rounds=2, runs_per_round=2, extra_rounds=0)


@pytest.fixture(scope="module")
def agent():
    server = DeviceAgent(("127.0.0.1", 0))
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def lab_device(url, **settings):
    return Device("lab-box", "a machine running nas agent serve", "cpu", "remote", {"url": url, **settings})


def test_health_answers_as_a_nas_agent(agent):
    with urllib.request.urlopen(agent.url + "/health", timeout=10) as response:
        assert json.loads(response.read())["agent"] == "nas"
    make_profiler(lab_device(agent.url)).check_available()


def test_remote_measurements_follow_the_protocol_and_are_stored(agent, tmp_path):
    space = get_space("nb201")
    archs = [space.from_index(11), space.from_index(12)]
    store = MeasurementStore(tmp_path / "m.db")
    records = measure(lab_device(agent.url, threads=1, **TINY), "nb201", archs, store=store)
    assert [r.source for r in records] == ["measured", "measured"]
    assert all(r.latency_ms > 0 and r.stats["rounds"] == 2 and r.device == "lab-box" for r in records)
    assert records[0].settings["threads"] == 1
    again = measure(lab_device(agent.url, **TINY), "nb201", archs, store=store)
    assert [r.source for r in again] == ["stored", "stored"]


def test_an_invalid_model_is_refused_with_the_reason(agent, tmp_path):
    garbage = tmp_path / "broken.onnx"
    garbage.write_bytes(b"\x00not onnx")
    with pytest.raises(UserInputError, match="not an ONNX model"):
        make_profiler(lab_device(agent.url)).load(garbage)


def test_an_unreachable_agent_says_how_to_start_one():
    profiler = make_profiler(lab_device("http://127.0.0.1:9"))
    with pytest.raises(DeviceUnavailableError, match="nas agent serve"):
        profiler.check_available()


def test_a_remote_device_needs_a_url():
    with pytest.raises(UserInputError, match="url"):
        make_profiler(Device("lab-box", "", "cpu", "remote", {}))


def test_nas_agent_serve_answers_until_interrupted():
    agent = subprocess.Popen([sys.executable, "-m", "nas", "agent", "serve", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = agent.stdout.readline()  # "nas agent listening on http://127.0.0.1:PORT ..."
        url = banner.split(" on ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        make_profiler(lab_device(url)).check_available()
        agent.send_signal(signal.SIGINT)
        assert agent.wait(timeout=30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=30)


# --------------------------------------------------------------------------- #
# A device farm: tokens, limits, one measurement at a time, several agents
# --------------------------------------------------------------------------- #
import os  # noqa: E402
import time  # noqa: E402

from nas.cli import main  # noqa: E402
from nas.profilers.remote import AgentBusyError, AgentClient, NotAnAgentError  # noqa: E402

TOKEN = "a-token-of-enough-length-0123456789"


def start(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return server


def stop(server):
    server.shutdown()
    server.server_close()


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "agent.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def test_an_agent_reachable_from_other_machines_needs_a_token(tmp_path, token_file, monkeypatch, capsys):
    monkeypatch.delenv("NAS_AGENT_TOKEN", raising=False)
    with pytest.raises(UserInputError, match="without a token"):
        DeviceAgent(("0.0.0.0", 0))
    assert main(["agent", "serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["agent", "serve", "--port", "0", "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    token_file.chmod(0o644)
    assert main(["agent", "serve", "--port", "0", "--token-file", str(token_file)]) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_a_token_is_required_and_checked(token_file, monkeypatch):
    monkeypatch.delenv("NAS_AGENT_TOKEN", raising=False)
    server = start(DeviceAgent(("127.0.0.1", 0), token=TOKEN))
    try:
        garbage = token_file.parent / "model.onnx"
        garbage.write_bytes(b"\x00" * 64)
        with pytest.raises(UserInputError, match="requires a token"):
            make_profiler(lab_device(server.url)).load(garbage)
        monkeypatch.setenv("NAS_AGENT_TOKEN", "a-wrong-token-of-enough-length")
        with pytest.raises(UserInputError, match="requires a token"):
            make_profiler(lab_device(server.url)).load(garbage)
        monkeypatch.delenv("NAS_AGENT_TOKEN")
        records = measure(lab_device(server.url, token_file=str(token_file), **TINY), "nb201",
                          [get_space("nb201").from_index(5)], store=False)
        assert records[0].latency_ms > 0
    finally:
        stop(server)


def test_uploads_are_size_limited_and_a_broken_model_never_stops_the_agent(tmp_path):
    server = start(DeviceAgent(("127.0.0.1", 0), max_upload_bytes=4096))
    try:
        big = tmp_path / "big.onnx"
        big.write_bytes(b"\x08" * 10_000)
        with pytest.raises(UserInputError, match="4096 bytes"):
            make_profiler(lab_device(server.url)).load(big)
        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"\x08\x07" + os.urandom(500))
        with pytest.raises(UserInputError, match="refused"):
            make_profiler(lab_device(server.url)).load(broken)
        make_profiler(lab_device(server.url)).check_available()  # still answering
    finally:
        stop(server)


def test_one_measurement_at_a_time_and_a_waiting_client_is_told(agent, capsys):
    first = AgentClient(agent.url, "lab-box", token=None, timeout_s=10)
    second = AgentClient(agent.url, "lab-box", token=None, timeout_s=10)
    first.take_lease(0)
    with pytest.raises(AgentBusyError, match="busy: measuring for another client"):
        second.take_lease(0)
    threading.Timer(1.5, first.give_back).start()
    second.take_lease(30)
    assert "waiting for it" in capsys.readouterr().err
    second.give_back()
    space = get_space("nb201")
    results = {}

    def client(name, index):
        results[name] = measure(lab_device(agent.url, **TINY), "nb201", [space.from_index(index)], store=False)

    clients = [threading.Thread(target=client, args=(n, 20 + n)) for n in range(2)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(timeout=120)
    assert sorted(results) == [0, 1] and agent.peak_timings == 1


def test_a_url_that_answers_but_is_not_an_agent_is_bad_input(tmp_path):
    import http.server

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>router login</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args):
            pass

    page = start(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page))
    try:
        url = f"http://127.0.0.1:{page.server_address[1]}"
        with pytest.raises(NotAnAgentError, match="not a nas agent"):
            make_profiler(lab_device(url)).check_available()
        os.environ["NAS_DEVICES"] = str(tmp_path)
        try:
            assert main(["devices", "add", "router", "--profiler", "remote", "--url", url]) == 2
        finally:
            del os.environ["NAS_DEVICES"]
    finally:
        stop(page)


def _spawn_agent():
    process = subprocess.Popen([sys.executable, "-m", "nas", "agent", "serve", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process


def test_a_farm_spreads_work_and_an_agent_killed_mid_run_loses_nothing(tmp_path, capsys):
    processes = [_spawn_agent() for _ in range(2)]
    try:
        urls = [p.stdout.readline().split(" on ")[1].split()[0] for p in processes]
        victim = urls[1]

        def kill_when_busy():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(victim + "/health", timeout=5) as response:
                        if json.loads(response.read())["models"] >= 1:
                            break
                except OSError:
                    pass
                time.sleep(0.02)
            processes[1].kill()

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        space = get_space("nb201")
        archs = [space.from_index(i) for i in range(100, 106)]
        store = MeasurementStore(tmp_path / "m.db")
        device = Device("lab-farm", "two boards", "cpu", "remote", {"agents": urls, **TINY})
        records = measure(device, "nb201", archs, store=store)
        killer.join(timeout=10)
        assert [r.arch for r in records] == [space.to_string(a) for a in archs]
        assert all(r.source == "measured" and r.latency_ms > 0 for r in records)
        assert len(store.all("lab-farm", "nb201")) == 6
        assert "stopped answering" in capsys.readouterr().err
        assert processes[1].poll() is not None and processes[0].poll() is None
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=30)


def test_a_farm_leaves_a_busy_agent_to_its_client_and_measures_on_the_others(agent, capsys):
    other = start(DeviceAgent(("127.0.0.1", 0)))
    try:
        holder = AgentClient(agent.url, "someone-else", token=None, timeout_s=10)
        holder.take_lease(0)  # another client measures on the first board all along
        space = get_space("nb201")
        device = Device("lab-farm", "two boards", "cpu", "remote", {"agents": [agent.url, other.url], **TINY})
        records = measure(device, "nb201", [space.from_index(i) for i in (40, 41)], store=False)
        assert [r.arch for r in records] == [space.to_string(space.from_index(i)) for i in (40, 41)]
        assert "goes to the other agents" in capsys.readouterr().err
        holder.give_back()
    finally:
        stop(other)
