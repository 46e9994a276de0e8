"""Decode and prefill latency of slm architectures through the ordinary profiler."""

import pytest

from nas.devices import get_device
from nas.errors import UserInputError
from nas.profilers import measure
from nas.profilers.protocol import reference_arch
from nas.search_space import get_space

QUICK = dict(rounds=2, runs_per_round=2, warmup_runs=1, extra_rounds=0)
ARCHS = ["D | A | - @64", "M2 | SWA | - @64"]


def test_decode_latency_records_context_and_batch_in_the_store(tmp_path):
    device = get_device("local-cpu").with_settings(context_length=32, batch_size=2, **QUICK)
    store = tmp_path / "store.db"
    records = measure(device, "slm", ARCHS, store=store)
    assert [r.arch for r in records] == ARCHS and all(r.latency_ms > 0 for r in records)
    assert records[0].settings["context_length"] == 32 and records[0].settings["phase"] == "decode"
    assert records[0].settings["batch_size"] == 2
    again = measure(device, "slm", ARCHS[:1], store=store)
    assert again[0].source == "stored"
    # another context length is another measurement
    longer = measure(device.with_settings(context_length=64), "slm", ARCHS[:1], store=store)
    assert longer[0].source == "measured" and longer[0].settings["context_length"] == 64


def test_prefill_latency_times_a_prompt_of_the_context_length():
    device = get_device("local-cpu").with_settings(phase="prefill", context_length=16, **QUICK)
    record = measure(device, "slm", ARCHS[:1], store=False)[0]
    assert record.settings["phase"] == "prefill" and record.latency_ms > 0


@pytest.mark.parametrize("settings, message", [({"context_length": 0}, "positive integer"),
                                               ({"context_length": "512"}, "positive integer"),
                                               ({"phase": "train"}, "decode, prefill")])
def test_bad_sequence_settings_are_user_errors(settings, message):
    device = get_device("local-cpu").with_settings(**settings, **QUICK)
    with pytest.raises(UserInputError, match=message):
        measure(device, "slm", ARCHS[:1], store=False)


def test_drift_reference_is_the_space_default():
    assert reference_arch("slm") == get_space("slm").default_arch()
