"""ProxylessNAS on the ``fbnet`` space: a path-binarized supernet searched
directly for a device's latency budget.

>>> from nas.proxyless import run_proxyless_search
>>> result = run_proxyless_search("local-cpu", "2ms", data="digits", epochs=4, out="runs/p2")
>>> result["arch"], result["measured_latency_ms"], result["test_accuracy"]

Modules: ``supernet`` (mixed ops, binary gates, two-path estimator),
``latency_table`` (per-layer lookup table fitted to the device's predictor),
``search`` (alternating weight / architecture updates, checkpoints),
``train`` (retraining from scratch), ``data`` (digits, cifar10, imagefolder),
``pipeline`` (the whole flow), ``integration`` (strategy ``proxyless`` and
the ``fbnet`` accuracy estimator for ``nas search``).
"""

from nas.proxyless.data import DATASETS, DataSplits, load_data
from nas.proxyless.latency_table import LatencyLookupTable, build_lookup_table, fit_lookup_table
from nas.proxyless.pipeline import derive_within_budget, run_proxyless_search, shrink_to_latency
from nas.proxyless.search import ProxylessSearch, SearchConfig, latency_loss
from nas.proxyless.supernet import MixedOp, ProxylessSupernet
from nas.proxyless.train import TrainResult, accuracy_percent, train_architecture
from nas.proxyless.integration import ProxylessStrategy, SupernetAccuracy  # registers with nas.search

__all__ = ["DATASETS", "DataSplits", "LatencyLookupTable", "MixedOp", "ProxylessSearch", "ProxylessStrategy", "ProxylessSupernet",
           "SearchConfig", "SupernetAccuracy", "TrainResult", "accuracy_percent", "build_lookup_table", "derive_within_budget",
           "fit_lookup_table", "latency_loss", "load_data", "run_proxyless_search", "shrink_to_latency",
           "train_architecture"]
