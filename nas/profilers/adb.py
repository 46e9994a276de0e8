"""Android phones over adb (kind ``adb``): each model is pushed to the phone
and timed there by ONNX Runtime's ``onnxruntime_perf_test`` binary, with the
protocol of :mod:`nas.profilers.protocol` (interleaved rounds, reference
model, outlier rejection).

Settings: ``serial`` (``null``: the only connected phone), ``adb`` (path of
the adb executable, default ``adb`` on PATH), ``remote_dir`` (where models
and the benchmark binary live on the phone), ``benchmark_binary``, and the
runtime settings ``threads``, ``batch_size``, ``graph_optimization_level``.
One timed block is one invocation of the binary; its median run ("P50
Latency", or the average where the binary does not print it) is the block's
single value, as the protocol summarises a block by its median run.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from nas.errors import DeviceUnavailableError, UserInputError
from nas.profilers import register_profiler
from nas.profilers.protocol import InterleavedProfiler, Timer

#: onnxruntime_perf_test's ``-o`` values
_PERF_TEST_LEVELS = {"disabled": 0, "basic": 1, "extended": 2, "all": 99}
_AVERAGE = re.compile(r"Average inference time cost:\s*([0-9.eE+-]+)\s*ms")
_MEDIAN = re.compile(r"P50 Latency:\s*([0-9.eE+-]+)\s*s\b")


@register_profiler("adb")
class AdbProfiler(InterleavedProfiler):
    """Times architectures on an Android phone reached with adb."""

    def __init__(self, device):
        super().__init__(device)
        self.remote_dir = str(device.settings.get("remote_dir") or "/data/local/tmp/nas")
        self.binary = str(device.settings.get("benchmark_binary") or "onnxruntime_perf_test")
        self._serial: str | None = device.settings.get("serial")

    # --- reaching the phone ------------------------------------------------------
    def _unavailable(self, problem: str, fix: str) -> DeviceUnavailableError:
        return DeviceUnavailableError(
            f"device {self.device.name!r} cannot be measured: {problem}. To measure it, {fix}. Otherwise "
            f"measure the 10 reference architectures on the phone yourself and pass them with "
            f"--measurements FILE.csv (columns arch,latency_ms), or pick a catalog device that needs no "
            f"phone ('nas devices list'; e.g. pixel3 replays recorded latencies).")

    def _adb(self) -> str:
        configured = self.device.settings.get("adb") or "adb"
        found = shutil.which(str(configured))
        if found is None:
            raise self._unavailable(f"adb was not found ({configured!r} is not on PATH)",
                                    "install Android SDK platform-tools "
                                    "(https://developer.android.com/tools/releases/platform-tools) and put adb "
                                    "on PATH, or set 'adb' in the device's profiler settings")
        return found

    def _run(self, *args: str, timeout: float = 120.0) -> str:
        command = [self._adb()] + (["-s", self._serial] if self._serial else []) + list(args)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise self._unavailable(f"'{' '.join(command)}' did not answer within {timeout:.0f} s",
                                    "check the cable and that the phone is unlocked") from None
        if done.returncode != 0:
            raise self._unavailable(f"'{' '.join(command)}' failed: {(done.stderr or done.stdout).strip()}",
                                    "check the connection ('adb devices') and try again")
        return done.stdout

    def check_available(self) -> None:
        adb = self._adb()
        try:
            listing = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=30).stdout
        except (subprocess.TimeoutExpired, OSError) as error:
            raise self._unavailable(f"'adb devices' failed ({error})", "restart the adb server "
                                    "('adb kill-server') and reconnect the phone") from None
        states = dict(line.split()[:2] for line in listing.splitlines()[1:] if len(line.split()) >= 2)
        wanted = self.device.settings.get("serial")
        if wanted:
            states = {serial: state for serial, state in states.items() if serial == wanted}
        ready = [serial for serial, state in states.items() if state == "device"]
        connect = ("connect the phone by USB, enable USB debugging (Settings > Developer options), "
                   "unlock it and accept the 'Allow USB debugging' prompt; 'adb devices' must list it as 'device'")
        if not ready:
            if any(state == "unauthorized" for state in states.values()):
                raise self._unavailable("the phone has not authorized this computer", connect)
            which = f"phone {wanted!r}" if wanted else "phone"
            raise self._unavailable(f"no {which} is connected", connect)
        if len(ready) > 1 and not wanted:
            raise UserInputError(f"several phones are connected ({', '.join(ready)}); set 'serial' in the "
                                 f"device's profiler settings to pick one")
        self._serial = ready[0]
        binary = f"{self.remote_dir}/{self.binary}"
        if "present" not in self._run("shell", f"test -x {binary} && echo present || echo missing"):
            raise self._unavailable(f"the benchmark binary {binary} is not on the phone",
                                    f"build onnxruntime_perf_test for Android arm64-v8a and copy it there: "
                                    f"adb shell mkdir -p {self.remote_dir} && adb push onnxruntime_perf_test "
                                    f"{self.remote_dir}/")

    # --- timing --------------------------------------------------------------------
    def load(self, onnx_path: Path) -> Timer:
        data = Path(onnx_path).read_bytes()
        remote_model = f"{self.remote_dir}/{hashlib.sha256(data).hexdigest()[:16]}.onnx"
        self._run("push", str(onnx_path), remote_model, timeout=300)
        return _PhoneModel(self, remote_model)


class _PhoneModel:
    def __init__(self, profiler: AdbProfiler, remote_model: str):
        self.profiler, self.remote_model = profiler, remote_model

    def __call__(self, runs: int) -> np.ndarray:
        runtime = self.profiler.runtime
        command = (f"{self.profiler.remote_dir}/{self.profiler.binary} -e cpu -I -r {runs} "
                   f"-x {runtime['threads']} -o {_PERF_TEST_LEVELS[runtime['graph_optimization_level']]} "
                   f"-f batch:{runtime['batch_size']} {self.remote_model}")
        output = self.profiler._run("shell", command)
        median, average = _MEDIAN.search(output), _AVERAGE.search(output)
        if median is not None:
            return np.array([float(median.group(1)) * 1000.0])
        if average is not None:
            return np.array([float(average.group(1))])
        raise UserInputError(f"{self.profiler.binary} on the phone printed no latency for {self.remote_model}; "
                             f"its output ends with: {output.strip()[-300:]!r}")
