import numpy as np
import pytest
import torch

from nas.errors import UserInputError
from nas.proxyless.latency_table import build_lookup_table
from nas.proxyless.search import ProxylessSearch, SearchConfig, latency_loss


@pytest.fixture(scope="module")
def table():
    return build_lookup_table("raspi4")[0]


def test_latency_losses_follow_the_paper():
    ce, expected = torch.tensor(2.0), torch.tensor(30.0)
    mul = SearchConfig(latency_loss="mul", beta=0.5)
    assert float(latency_loss(ce, expected, 15.0, mul)) == pytest.approx(2.0 * 2 ** 0.5)
    assert float(latency_loss(ce, torch.tensor(7.5), 15.0, mul)) == pytest.approx(2.0 * 0.5 ** 0.5)
    hinge = SearchConfig(beta=0.5)
    assert hinge.latency_loss == "hinge"
    assert float(latency_loss(ce, expected, 15.0, hinge)) == pytest.approx(2.0 * 2 ** 0.5)
    under = torch.tensor(7.5, requires_grad=True)  # under the budget: no pull towards faster paths
    loss = latency_loss(ce, under, 15.0, hinge)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(2.0) and float(under.grad) == 0.0
    add = SearchConfig(latency_loss="add", lambda_per_ms=0.1)
    assert float(latency_loss(ce, expected, 15.0, add)) == pytest.approx(5.0)
    with pytest.raises(UserInputError, match="latency_loss"):
        SearchConfig(latency_loss="max").validate()


def test_latency_term_pulls_expected_latency_towards_the_target(tiny_digits, table):
    config = SearchConfig(epochs=2, warmup_epochs=1, batch_size=32, arch_lr=0.1, latency_loss="add",
                          lambda_per_ms=0.5)
    search = ProxylessSearch(tiny_digits, table, target_ms=1.0, config=config)
    start = search.expected_latency_ms()
    search.run()
    assert search.expected_latency_ms() < start
    assert [h["epoch"] for h in search.history] == [1, 2]


def test_resume_continues_exactly_where_it_stopped(tiny_digits, table, tmp_path):
    config = SearchConfig(epochs=2, warmup_epochs=1, batch_size=48)
    straight = ProxylessSearch(tiny_digits, table, 40.0, config)
    straight.run()

    def interrupt(_message):  # called after each epoch's checkpoint: stop like Ctrl-C would
        raise KeyboardInterrupt

    interrupted = ProxylessSearch(tiny_digits, table, 40.0, config, checkpoint_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(progress=interrupt)
    resumed = ProxylessSearch(tiny_digits, table, 40.0, config, checkpoint_dir=tmp_path)
    resumed.resume()
    assert resumed.epoch == 1
    resumed.run()
    assert torch.allclose(resumed.supernet.alpha, straight.supernet.alpha, atol=1e-6)
    assert np.isclose(resumed.history[-1]["weight_loss"], straight.history[-1]["weight_loss"])

    with pytest.raises(UserInputError, match="different search"):
        ProxylessSearch(tiny_digits, table, 20.0, config, checkpoint_dir=tmp_path).resume()
    with pytest.raises(UserInputError, match="no checkpoint"):
        ProxylessSearch(tiny_digits, table, 40.0, config, checkpoint_dir=tmp_path / "empty").resume()

    # a checkpoint of the earlier supernet format (no transition shortcut) is refused, not loaded
    state = torch.load(resumed.checkpoint_path, weights_only=False)
    del state["identity"]["supernet_format"]
    torch.save(state, resumed.checkpoint_path)
    with pytest.raises(UserInputError, match="format-1 supernet"):
        ProxylessSearch(tiny_digits, table, 40.0, config, checkpoint_dir=tmp_path).resume()
