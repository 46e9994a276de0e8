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
