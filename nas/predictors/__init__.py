"""Latency predictors."""

from nas.predictors.base import LatencyPredictor
from nas.predictors.transfer import TransferPredictor

__all__ = ["LatencyPredictor", "TransferPredictor"]
