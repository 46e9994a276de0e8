import math

import numpy as np
import pytest
import torch

from nas.errors import UserInputError
from nas.search_space.slm.model import SmallLanguageModel
from nas.slm.corpus import load_corpus
from nas.slm.training import (TrainingConfig, bits_per_byte, cosine_schedule, random_windows,
                              train_language_model)


def test_schedule_warms_up_then_decays_to_its_floor():
    values = [cosine_schedule(s, 100, 0.1, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert cosine_schedule(100, 100, 0.1, 0.1) == pytest.approx(0.1)


def test_windows_are_slices_of_the_text():
    data = np.arange(1000, dtype=np.uint8)
    batch = random_windows(data, 4, 17, np.random.default_rng(0))
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    assert all(((row[1:] - row[:-1]) % 256 == 1).all() for row in batch)


def test_bad_budgets_are_refused():
    with pytest.raises(UserInputError, match="tokens"):
        TrainingConfig(tokens=0)
    with pytest.raises(UserInputError, match="less than one batch"):
        TrainingConfig(tokens=100, batch_size=8, context=64)


def test_short_training_lowers_validation_bits_per_byte():
    corpus = load_corpus()
    torch.manual_seed(0)
    model = SmallLanguageModel(["SWA", "F"], 32)
    before = bits_per_byte(model, corpus.validation, context=32, max_bytes=2048)
    assert 7.0 < before < 9.5  # about log2(256) untrained
    config = TrainingConfig(tokens=20 * 4 * 32, batch_size=4, context=32, eval_bytes=2048, learning_rate=2e-2)
    run = train_language_model(model, corpus.train, corpus.validation, config)
    assert run.steps == 20 and run.tokens == config.tokens
    assert math.isfinite(run.val_bpb) and run.val_bpb < before - 1.0
    assert run.curve[-1][0] == 20 and run.curve[-1][1] < run.curve[0][1]
    assert run.val_bpb == pytest.approx(bits_per_byte(model, corpus.validation, context=32, max_bytes=2048))
