import numpy as np
import pytest
import torch
from torch import nn

from nas.errors import UserInputError
from nas.search_space.slm.model import SmallLanguageModel
from nas.slm.recall import RecallTask, recall_accuracy, recall_batch, score_recall


def test_sequences_ask_keys_listed_earlier_and_score_only_answers():
    task = RecallTask(num_pairs=6, num_queries=5)
    tokens, targets = recall_batch(task, 3, np.random.default_rng(0))
    assert tokens.shape == targets.shape == (3, task.length)
    for row, target in zip(tokens.tolist(), targets.tolist()):
        pairs = dict(zip(row[0:12:2], row[1:12:2]))
        assert len(pairs) == 6 and all(k < 128 <= v for k, v in pairs.items())
        asked = [i for i, t in enumerate(target) if t != -100]
        assert asked == list(range(12, task.length, 2))
        for i in asked:
            assert target[i] == pairs[row[i]] == row[i + 1]


class LookupOracle(nn.Module):
    """Answers each key with the value that followed it earlier in the sequence."""

    def forward(self, tokens):
        logits = torch.zeros(*tokens.shape, 256)
        for b, row in enumerate(tokens.tolist()):
            seen = {}
            for i, token in enumerate(row):
                if token < 128 and token in seen:
                    logits[b, i, seen[token]] = 1.0
                if i + 1 < len(row) and token < 128 and token not in seen:
                    seen[token] = row[i + 1]
        return logits


def test_a_perfect_lookup_scores_one_and_a_constant_guess_near_zero():
    task = RecallTask(num_pairs=8, num_queries=8, test_sequences=32)
    assert score_recall(LookupOracle(), task) == 1.0
    constant = nn.Sequential(nn.Embedding(256, 4), nn.Linear(4, 256))
    assert score_recall(constant, task) < 0.2


def test_training_a_model_on_the_task_reports_an_accuracy():
    task = RecallTask(num_pairs=4, num_queries=4, train_steps=5, batch_size=8, test_sequences=16)
    result = recall_accuracy(lambda: SmallLanguageModel(["A", "F"], 32), task)
    assert 0.0 <= result.accuracy <= 1.0 and result.train_steps == 5


def test_bad_task_sizes_are_refused():
    with pytest.raises(UserInputError, match="num_pairs"):
        RecallTask(num_pairs=200)
    with pytest.raises(UserInputError, match="train_steps"):
        RecallTask(train_steps=0)
