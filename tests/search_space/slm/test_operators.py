"""The chunked/parallel form of every mixer equals its one-token recurrent form."""

import pytest
import torch

from nas.search_space.slm import operators as ops

#: largest absolute difference allowed between the two forms (float32, unit-scale outputs)
TOLERANCE = 1e-4
LENGTHS = (1, ops.CHUNK, 2 * ops.CHUNK + 7)  # one token, a whole chunk, a ragged last chunk


def _mixers(width=64):
    torch.manual_seed(0)
    return {"A": ops.Attention(width), "SWA": ops.Attention(width, window=8), "M2": ops.Mamba2(width),
            "D": ops.DeltaNet(width), "GD": ops.DeltaNet(width, gated=True)}


def _step_by_step(mixer, x, start_states):
    states, outs = start_states, []
    for t in range(x.shape[1]):
        out, states = mixer.step(x[:, t], states, torch.tensor([t]))
        outs.append(out)
    return torch.stack(outs, dim=1), states


@pytest.mark.parametrize("kind", ["A", "SWA", "M2", "D", "GD"])
def test_parallel_form_equals_recurrent_form(kind):
    mixer = _mixers()[kind]
    for length in LENGTHS:
        x = torch.randn(2, length, 64)
        with torch.no_grad():
            parallel, final = mixer(x)
            empty = [torch.zeros(s) for s in mixer.state_shapes(2, 0)]
            recurrent, states = _step_by_step(mixer, x, empty)
        assert (parallel - recurrent).abs().max() < TOLERANCE, (kind, length)
        for a, b in zip(final, states):
            assert a.shape == b.shape and (a - b).abs().max() < TOLERANCE, (kind, length)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [4, 8, 16])
def test_chunked_delta_rule_matches_the_recurrence_for_any_chunk(gated, chunk):
    torch.manual_seed(1)
    b, h, t, dk, dv = 2, 3, 37, 16, 8
    q = torch.nn.functional.normalize(torch.randn(b, h, t, dk), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(b, h, t, dk), dim=-1)
    v = torch.randn(b, h, t, dv)
    beta = torch.rand(b, h, t)
    log_decay = -torch.rand(b, h, t) if gated else None
    start = torch.randn(b, h, dk, dv)
    out, final = ops.chunked_recurrence(q, k, v, log_decay, beta, start, chunk=chunk)
    state, steps = start, []
    for i in range(t):
        o, state = ops.recurrent_step(q[:, :, i], k[:, :, i], v[:, :, i],
                                      None if log_decay is None else log_decay[:, :, i], beta[:, :, i], state)
        steps.append(o)
    assert (out - torch.stack(steps, dim=2)).abs().max() < TOLERANCE
    assert (final - state).abs().max() < TOLERANCE


def test_sliding_window_sees_exactly_the_last_w_tokens_including_itself():
    # window 3: the output at t depends on x[t-2], x[t-1], x[t] and on nothing earlier
    torch.manual_seed(2)
    attention = ops.Attention(64, window=3)
    x = torch.randn(1, 10, 64, requires_grad=True)
    out, _ = attention(x)
    out[0, 6].sum().backward()
    touched = [t for t in range(10) if x.grad[0, t].abs().sum() > 0]
    assert touched == [4, 5, 6]
    # the decode state after a prompt keeps the last W keys, oldest first
    with torch.no_grad():
        _, (keys, _) = attention(x)
    assert keys.shape == (1, attention.kv_heads, 3, ops.HEAD_DIM)


def test_sliding_window_state_masks_slots_before_the_first_token():
    torch.manual_seed(3)
    attention = ops.Attention(64, window=4)
    x = torch.randn(1, 2, 64)
    with torch.no_grad():
        parallel, (keys, _) = attention(x)
    # two tokens in a window of four: two zero slots in front, masked out
    assert keys[0, :, :2].abs().sum() == 0 and keys[0, :, 2:].abs().sum() > 0
    assert parallel.shape == (1, 2, 64)


def test_short_convolution_is_causal_and_continues_from_its_state():
    conv = ops.ShortConv(5)
    x = torch.randn(2, 9, 5)
    with torch.no_grad():
        whole, _ = conv(x)
        first, state = conv(x[:, :6])
        outs = []
        for t in range(6, 9):
            out, state = conv.step(x[:, t], state)
            outs.append(out)
    assert torch.allclose(whole[:, :6], first, atol=1e-6)
    assert torch.allclose(whole[:, 6:], torch.stack(outs, 1), atol=1e-5)
