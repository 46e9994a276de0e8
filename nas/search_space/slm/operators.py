"""Token mixers and feed-forward layers of the ``slm`` space, in plain PyTorch.

Every mixer has two forms that compute the same function:

- ``forward(x)``: the whole sequence at once (training and prefill), parallel
  for attention and chunked for the recurrent mixers, returning the output
  and the state after the last token;
- ``step(x, state, position)``: one token, the state in and out explicitly,
  so that a decode step can be exported as one ONNX graph whose inputs and
  outputs are the states.

States (``B`` batch, ``L`` cached tokens, ``W`` window, ``K`` conv kernel):

- full attention: keys and values ``[B, kv_heads, L, head_dim]`` (grows by one a step);
- sliding-window attention: the last ``W`` keys and values, oldest first,
  ``[B, kv_heads, W, head_dim]``; slots before the first token are zeros and masked;
- Mamba2: causal-conv inputs ``[B, channels, K-1]`` and SSM state ``[B, heads, N, P]``;
- DeltaNet / Gated DeltaNet: causal-conv inputs of q, k, v ``[B, 3*inner, K-1]``
  and the delta-rule state ``[B, heads, d_k, d_v]``.

The recurrences follow ``METHODS.md`` (Nemotron-Flash operator facts). The
chunked forms of the linear recurrences share :func:`chunked_recurrence`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: tokens per chunk of the chunked recurrences
CHUNK = 32
#: kernel of the short causal convolutions
CONV_KERNEL = 4
HEAD_DIM = 32
MAMBA_STATE = 16
MAMBA_EXPAND = 2
ROPE_BASE = 10_000.0


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """Feed-forward layer ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=False)
        self.up = nn.Linear(dim, hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class ShortConv(nn.Module):
    """Depthwise causal convolution over time (kernel :data:`CONV_KERNEL`);
    its state is the last ``K-1`` inputs ``[B, channels, K-1]``."""

    def __init__(self, channels: int, kernel: int = CONV_KERNEL):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.randn(channels, kernel) / math.sqrt(kernel))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, T, C]`` -> output ``[B, T, C]`` and the state after it."""
        xt = x.transpose(1, 2)
        padded = F.pad(xt, (self.kernel - 1, 0))
        out = F.conv1d(padded, self.weight.unsqueeze(1), self.bias, groups=self.weight.shape[0])
        return out.transpose(1, 2), padded[:, :, -(self.kernel - 1):]

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C]``, ``state [B, C, K-1]`` -> output ``[B, C]``, new state."""
        window = torch.cat([state, x.unsqueeze(-1)], dim=-1)
        return (window * self.weight).sum(-1) + self.bias, window[:, :, 1:]


def _neumann_inverse(a: torch.Tensor) -> torch.Tensor:
    """``(I + A)^-1`` of strictly lower-triangular ``A [..., C, C]``: A is
    nilpotent, so the inverse is ``(I - A)(I + A^2)(I + A^4)...`` with
    ``log2 C`` factors (matrix products only, which export to ONNX)."""
    size = a.shape[-1]
    eye = torch.eye(size, dtype=a.dtype, device=a.device)
    result = eye - a
    power = a
    for _ in range(max(0, math.ceil(math.log2(size)) - 1)):
        power = power @ power
        result = result @ (eye + power)
    return result


def chunked_recurrence(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None,
                       beta: torch.Tensor | None, state: torch.Tensor | None = None,
                       chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked form of ``S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T``, ``o_t = S_t^T q_t``.

    ``q, k [B, H, T, dk]``, ``v [B, H, T, dv]``, ``log_decay`` (``log a_t``,
    ``None``: no decay) and ``beta`` (``None``: no delta rule, plain
    ``S_t = a_t S_{t-1} + k_t v_t^T``) ``[B, H, T]``, ``state [B, H, dk, dv]``.
    Returns ``o [B, H, T, dv]`` and the final state. Within a chunk the
    pseudo-values ``U = T(b*V) - T(b*G*K) S`` (``T = (I + A)^-1``,
    ``A_ij = b_i G_i/G_j k_i.k_j`` for ``j < i``, ``G`` the cumulative decay)
    carry the delta rule; states pass from chunk to chunk.
    """
    batch, heads, length, dk = k.shape
    dv = v.shape[-1]
    pad = (-length) % chunk
    if log_decay is None:
        log_decay = torch.zeros(q.shape[:3], dtype=q.dtype, device=q.device)
    if pad:  # padded steps have k = 0, v = 0, decay 1: they leave the state alone
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        log_decay = F.pad(log_decay, (0, pad))
        beta = F.pad(beta, (0, pad)) if beta is not None else None
    n = (length + pad) // chunk
    q, k, v = (t.reshape(batch, heads, n, chunk, -1) for t in (q, k, v))
    g = log_decay.reshape(batch, heads, n, chunk).cumsum(-1)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    diff = (g.unsqueeze(-1) - g.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
    decay_ij = diff.exp()  # G_i / G_j for j <= i, else 0
    gamma = g.exp().unsqueeze(-1)  # G_i
    to_end = (g[..., -1:] - g).exp().unsqueeze(-1)  # G_C / G_j
    if beta is not None:
        b = beta.reshape(batch, heads, n, chunk).unsqueeze(-1)
        a = (b * (k @ k.transpose(-1, -2)) * decay_ij).tril(-1)
        t_inv = _neumann_inverse(a)
        w = t_inv @ (b * gamma * k)
        u0 = t_inv @ (b * v)
    else:
        w, u0 = None, v
    scores = (q @ k.transpose(-1, -2)) * decay_ij
    if state is None:
        state = q.new_zeros(batch, heads, dk, dv)
    outputs = []
    for i in range(n):
        u = u0[:, :, i] if w is None else u0[:, :, i] - w[:, :, i] @ state
        outputs.append((gamma[:, :, i] * q[:, :, i]) @ state + scores[:, :, i] @ u)
        state = g[:, :, i, -1:].exp().unsqueeze(-1) * state + (k[:, :, i] * to_end[:, :, i]).transpose(-1, -2) @ u
    out = torch.stack(outputs, dim=2).reshape(batch, heads, n * chunk, dv)
    return out[:, :, :length], state


def recurrent_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None,
                   beta: torch.Tensor | None, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of :func:`chunked_recurrence`: ``q, k [B, H, dk]``, ``v [B, H, dv]``,
    ``log_decay``, ``beta [B, H]``; returns ``o [B, H, dv]`` and the new state."""
    if log_decay is not None:
        state = log_decay.exp()[..., None, None] * state
    if beta is None:
        update = v
    else:
        update = beta.unsqueeze(-1) * (v - (state * k.unsqueeze(-1)).sum(-2))
    state = state + k.unsqueeze(-1) * update.unsqueeze(-2)
    return (state * q.unsqueeze(-1)).sum(-2), state


class _FusedLinearAttention(torch.autograd.Function):
    """:func:`chunked_recurrence` on ``[B, H, T, d]`` inputs, exported as ONNX
    Runtime's ``com.microsoft.LinearAttention`` (one fused kernel for a
    decode step or a whole prompt; one decode step of a layer measured
    1.6-1.8x faster than the same update written with standard operators,
    ``experiments/slm_linear_attention.py``)."""

    @staticmethod
    def forward(ctx, q, k, v, state, log_decay, beta, rule, heads):
        return chunked_recurrence(q, k, v, log_decay, None if rule == "gated" else beta, state)

    @staticmethod
    def symbolic(g, q, k, v, state, log_decay, beta, rule, heads):
        def constant(values):
            return g.op("Constant", value_t=torch.tensor(values))

        def packed(x):  # [B, H, T, D] -> [B, T, H*D]
            return g.op("Reshape", g.op("Transpose", x, perm_i=[0, 2, 1, 3]), constant([0, 0, -1]))

        inputs = [packed(q), packed(k), packed(v), state, g.op("Transpose", log_decay, perm_i=[0, 2, 1])]
        if rule != "gated":
            inputs.append(g.op("Transpose", beta, perm_i=[0, 2, 1]))
        out, present = g.op("com.microsoft::LinearAttention", *inputs, update_rule_s=rule, q_num_heads_i=heads,
                            kv_num_heads_i=heads, scale_f=1.0, outputs=2)
        out = g.op("Transpose", g.op("Reshape", out, constant([0, 0, heads, -1])), perm_i=[0, 2, 1, 3])
        return out, present


def linear_attention(q, k, v, log_decay, beta, state, heads: int):
    """:func:`chunked_recurrence` (``state`` ``None``: zeros); while exporting
    to ONNX, the fused contrib op (no decay is a decay of 0 in log space; no
    beta is its ``gated`` rule)."""
    if not torch.onnx.is_in_onnx_export():
        return chunked_recurrence(q, k, v, log_decay, beta, state)
    if state is None:
        state = q.new_zeros(q.shape[0], heads, q.shape[-1], v.shape[-1])
    if log_decay is None:
        log_decay = torch.zeros_like(beta)
    rule = "gated" if beta is None else "gated_delta"
    return _FusedLinearAttention.apply(q, k, v, state, log_decay, beta, rule, heads)


def linear_attention_step(q, k, v, log_decay, beta, state, heads: int):
    """:func:`recurrent_step`; while exporting, :func:`linear_attention` on a one-token sequence."""
    if not torch.onnx.is_in_onnx_export():
        return recurrent_step(q, k, v, log_decay, beta, state)
    out, state = linear_attention(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2),
                                  None if log_decay is None else log_decay.unsqueeze(-1),
                                  None if beta is None else beta.unsqueeze(-1), state, heads)
    return out.squeeze(2), state


def _rope(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotary embedding (rotate-half) of ``x [B, H, T, D]`` at float ``positions [T]``."""
    half = x.shape[-1] // 2
    inv_freq = ROPE_BASE ** (-torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = positions.to(x.dtype).unsqueeze(-1) * inv_freq
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def kv_heads_for(heads: int) -> int:
    """Grouped KV heads: the largest divisor of ``heads`` that is at most half
    of it (1 for 1, 2, 3, 5, 7 heads; 2 for 4; 3 for 6; 4 for 8)."""
    return max([d for d in range(1, heads // 2 + 1) if heads % d == 0] or [1])


class Attention(nn.Module):
    """Causal softmax attention with RoPE and grouped KV heads; ``window``
    (``None``: full) makes token ``t`` attend to ``t-W+1 ... t``."""

    def __init__(self, dim: int, window: int | None = None, head_dim: int = HEAD_DIM):
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.kv_heads = kv_heads_for(self.heads)
        self.head_dim = head_dim
        self.window = window
        self.q = nn.Linear(dim, self.heads * head_dim, bias=False)
        self.k = nn.Linear(dim, self.kv_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, self.kv_heads * head_dim, bias=False)
        self.o = nn.Linear(self.heads * head_dim, dim, bias=False)

    def state_shapes(self, batch: int, context: int) -> list[tuple[int, ...]]:
        length = self.window if self.window is not None else context
        return [(batch, self.kv_heads, length, self.head_dim)] * 2

    def _expand(self, kv: torch.Tensor) -> torch.Tensor:
        b, g, length, d = kv.shape
        group = self.heads // self.kv_heads
        return kv.unsqueeze(2).expand(b, g, group, length, d).reshape(b, self.heads, length, d)

    def _split(self, x: torch.Tensor, positions: torch.Tensor):
        b, t, _ = x.shape
        q = self.q(x).reshape(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        return _rope(q, positions), _rope(k, positions), v

    def _attend(self, q, k, v, mask):
        scores = (q @ self._expand(k).transpose(-1, -2)) / math.sqrt(self.head_dim)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        out = weights @ self._expand(v)
        b, h, t, d = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, h * d))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        t = x.shape[1]
        positions = torch.arange(t, device=x.device)
        q, k, v = self._split(x, positions)
        i, j = positions.unsqueeze(1), positions.unsqueeze(0)
        mask = j <= i
        if self.window is not None:
            mask = mask & (i - j < self.window)
            keep = min(t, self.window)
            k_state = F.pad(k[:, :, t - keep:], (0, 0, self.window - keep, 0))
            v_state = F.pad(v[:, :, t - keep:], (0, 0, self.window - keep, 0))
            return self._attend(q, k, v, mask), [k_state, v_state]
        return self._attend(q, k, v, mask), [k, v]

    def step(self, x: torch.Tensor, state: list[torch.Tensor], position: torch.Tensor):
        """``x [B, dim]``, ``position [1]`` (int64, index of this token)."""
        q, k, v = self._split(x.unsqueeze(1), position)
        keys = torch.cat([state[0], k], dim=2)
        values = torch.cat([state[1], v], dim=2)
        if self.window is not None:
            keys, values = keys[:, :, 1:], values[:, :, 1:]
            slots = torch.arange(self.window, device=x.device)
            mask = (slots >= self.window - 1 - position).reshape(1, 1, 1, self.window)
        else:
            mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=x.device)
        return self._attend(q, keys, values, mask).squeeze(1), [keys, values]


class Mamba2(nn.Module):
    """Mamba2 mixer: scalar decay per head, one group of B/C, short causal
    convolution over ``[x, B, C]``, gated RMSNorm before the out-projection."""

    def __init__(self, dim: int, head_dim: int = HEAD_DIM, state_dim: int = MAMBA_STATE,
                 expand: int = MAMBA_EXPAND):
        super().__init__()
        self.inner = expand * dim
        self.heads = self.inner // head_dim
        self.head_dim = head_dim
        self.state_dim = state_dim
        self.conv_channels = self.inner + 2 * state_dim
        self.in_proj = nn.Linear(dim, 2 * self.inner + 2 * state_dim + self.heads, bias=False)
        self.conv = ShortConv(self.conv_channels)
        dt = torch.exp(torch.rand(self.heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.A_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(self.heads))
        self.norm = RMSNorm(self.inner)
        self.out_proj = nn.Linear(self.inner, dim, bias=False)

    def state_shapes(self, batch: int, context: int) -> list[tuple[int, ...]]:
        return [(batch, self.conv_channels, CONV_KERNEL - 1), (batch, self.heads, self.state_dim, self.head_dim)]

    def _project(self, x):
        z, xbc, dt = self.in_proj(x).split([self.inner, self.conv_channels, self.heads], dim=-1)
        return z, xbc, dt

    def _ssm_inputs(self, xbc, dt):
        xs, b, c = F.silu(xbc).split([self.inner, self.state_dim, self.state_dim], dim=-1)
        delta = F.softplus(dt + self.dt_bias)
        log_decay = -delta * self.A_log.exp()
        return xs, b, c, delta, log_decay

    def _output(self, y, xs, z):
        y = y + xs * self.D.repeat_interleave(self.head_dim)
        return self.out_proj(self.norm(y * F.silu(z)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        bsz, t, _ = x.shape
        z, xbc, dt = self._project(x)
        xbc, conv_state = self.conv(xbc)
        xs, b, c, delta, log_decay = self._ssm_inputs(xbc, dt)
        heads = xs.reshape(bsz, t, self.heads, self.head_dim).transpose(1, 2)
        value = heads * delta.transpose(1, 2).unsqueeze(-1)
        key = b.unsqueeze(1).expand(bsz, self.heads, t, self.state_dim)
        query = c.unsqueeze(1).expand(bsz, self.heads, t, self.state_dim)
        y, state = linear_attention(query, key, value, log_decay.transpose(1, 2), None, None, self.heads)
        y = y.transpose(1, 2).reshape(bsz, t, self.inner)
        return self._output(y, xs, z), [conv_state, state]

    def step(self, x: torch.Tensor, state: list[torch.Tensor], position: torch.Tensor):
        bsz = x.shape[0]
        z, xbc, dt = self._project(x)
        xbc, conv_state = self.conv.step(xbc, state[0])
        xs, b, c, delta, log_decay = self._ssm_inputs(xbc, dt)
        value = xs.reshape(bsz, self.heads, self.head_dim) * delta.unsqueeze(-1)
        key = b.unsqueeze(1).expand(bsz, self.heads, self.state_dim)
        query = c.unsqueeze(1).expand(bsz, self.heads, self.state_dim)
        y, ssm_state = linear_attention_step(query, key, value, log_decay, None, state[1], self.heads)
        return self._output(y.reshape(bsz, self.inner), xs, z), [conv_state, ssm_state]


class DeltaNet(nn.Module):
    """DeltaNet (``gated=False``) or Gated DeltaNet (``gated=True``): q, k, v
    through short causal convolutions and SiLU, q and k L2-normalised,
    ``beta = sigmoid(w_b x)``; Gated DeltaNet adds the decay
    ``a_t = exp(-exp(A_log) softplus(w_a x + dt_bias))`` and an output gate.
    The read-out is scaled by ``d_k^-1/2`` and RMS-normalised per head."""

    def __init__(self, dim: int, gated: bool = False, head_dim: int = HEAD_DIM):
        super().__init__()
        self.heads = max(1, dim // head_dim)
        self.head_dim = head_dim
        self.inner = self.heads * head_dim
        self.gated = gated
        self.qkv = nn.Linear(dim, 3 * self.inner, bias=False)
        self.conv = ShortConv(3 * self.inner)
        self.beta = nn.Linear(dim, self.heads, bias=False)
        if gated:
            self.decay = nn.Linear(dim, self.heads, bias=False)
            dt = torch.exp(torch.rand(self.heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
            self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
            self.A_log = nn.Parameter(torch.log(torch.empty(self.heads).uniform_(1, 16)))
            self.gate = nn.Linear(dim, self.inner, bias=False)
        self.norm = RMSNorm(head_dim)
        self.o = nn.Linear(self.inner, dim, bias=False)

    def state_shapes(self, batch: int, context: int) -> list[tuple[int, ...]]:
        return [(batch, 3 * self.inner, CONV_KERNEL - 1), (batch, self.heads, self.head_dim, self.head_dim)]

    def _gates(self, x):
        beta = torch.sigmoid(self.beta(x))
        log_decay = None
        if self.gated:
            log_decay = -self.A_log.exp() * F.softplus(self.decay(x) + self.dt_bias)
        return beta, log_decay

    def _qkv(self, qkv, shape):
        q, k, v = F.silu(qkv).split(self.inner, dim=-1)
        q, k, v = (t.reshape(*shape, self.heads, self.head_dim) for t in (q, k, v))
        q = F.normalize(q, dim=-1) / math.sqrt(self.head_dim)
        return q, F.normalize(k, dim=-1), v

    def _output(self, o, x):
        o = self.norm(o)
        if self.gated:
            o = o * F.silu(self.gate(x)).reshape(o.shape)
        return self.o(o.reshape(*o.shape[:-2], self.inner))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        bsz, t, _ = x.shape
        qkv, conv_state = self.conv(self.qkv(x))
        q, k, v = (y.transpose(1, 2) for y in self._qkv(qkv, (bsz, t)))
        beta, log_decay = self._gates(x)
        o, state = linear_attention(q, k, v, None if log_decay is None else log_decay.transpose(1, 2),
                                    beta.transpose(1, 2), None, self.heads)
        return self._output(o.transpose(1, 2), x), [conv_state, state]

    def step(self, x: torch.Tensor, state: list[torch.Tensor], position: torch.Tensor):
        qkv, conv_state = self.conv.step(self.qkv(x), state[0])
        q, k, v = self._qkv(qkv, (x.shape[0],))
        beta, log_decay = self._gates(x)
        o, delta_state = linear_attention_step(q, k, v, log_decay, beta, state[1], self.heads)
        return self._output(o, x), [conv_state, delta_state]
