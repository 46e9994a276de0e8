"""An installed (non-editable) wheel finds its data and device catalog from any directory."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_wheel_works_from_another_directory(tmp_path):
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(REPO)], check=True, capture_output=True)
    wheel = next(wheels.glob("nas-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import nas, sys; from nas import benchmarks; from nas.devices import get_device; "
            "assert str(sys.argv[1]) in nas.__file__, nas.__file__; "
            "benchmarks.latency_table('fbnet'); print(get_device('pixel7').hardware['soc'])")
    result = subprocess.run([sys.executable, "-c", code, str(target)], cwd=workdir, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Google Tensor G2"
