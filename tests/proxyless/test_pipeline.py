"""End to end on the real local CPU (ONNX Runtime) and on a replayed device."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from nas.devices import get_device
from nas.errors import UserInputError
from nas.proxyless import run_proxyless_search


def test_search_on_local_cpu_meets_the_budget_and_exports_trained_weights(tiny_digits, tmp_path):
    out = tmp_path / "run"
    # the catalog's local-cpu, timed with a shorter protocol to keep the test quick
    device = get_device("local-cpu").with_settings(rounds=2, runs_per_round=3, warmup_runs=1, extra_rounds=0)
    result = run_proxyless_search(device, "4ms", data=tiny_digits, epochs=1, retrain_epochs=1, out=out,
                                  store=tmp_path / "store.db", max_measurements=4)
    assert result["status"] == "verified"
    assert result["measured_latency_ms"] <= 4.0
    assert 0 <= result["test_accuracy"] <= 100
    assert result["device_samples"] >= 11  # 10 reference architectures + at least one verification
    assert "r2" in result["latency_table"] and "spearman" in result["latency_table"]
    assert "not installed" not in (result["versions"]["nas"], result["versions"]["torch"])
    saved = json.loads((out / "result.json").read_text())
    assert saved["arch"] == result["arch"] and (out / "checkpoint.pt").is_file()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (2, 10)


def test_replayed_device_gives_a_table_prediction_and_resume_needs_a_checkpoint(tiny_digits, tmp_path):
    result = run_proxyless_search("raspi4", "30ms", data=tiny_digits, epochs=1, retrain_epochs=1)
    assert result["status"] == "predicted" and result["measured_latency_ms"] is None
    assert result["predicted_latency_ms"] <= 30.0 and result["device_samples"] == 0
    # one epoch on 96 images: a network near chance (10% for 10 classes) is flagged as such
    assert any("near chance" in w for w in result["warnings"]) == (result["test_accuracy"] <= 19.0)
    assert result["num_classes"] == 10
    with pytest.raises(UserInputError, match="no checkpoint"):
        run_proxyless_search("raspi4", "30ms", data=tiny_digits, epochs=1, out=tmp_path, resume=True)
    with pytest.raises(UserInputError, match="budget"):
        run_proxyless_search("raspi4", "-3ms", data=tiny_digits)
