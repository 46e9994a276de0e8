"""Fast, vectorised views of architectures that predictors read: operation
codes, benchmark row, analytic FLOPs / parameters, and the latencies the
meta-train devices recorded (or would record) for any architecture.

Everything here is numpy over integer codes so that predictors reach tens of
thousands of architectures per second.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import numpy as np

from nas import benchmarks
from nas.errors import UserInputError
from nas.search_space import Arch, get_space


@functools.lru_cache(maxsize=None)
def _op_lookup(space: str) -> tuple[dict[str, int], ...]:
    return tuple({op: k for k, op in enumerate(ops)} for ops in get_space(space).choices)


def op_codes(space: str, archs: Sequence[Arch | str]) -> np.ndarray:
    """``[n, positions]`` integer code of each position's operation.

    Accepts tuples of the space or canonical strings; an architecture that
    does not belong to the space is a :class:`UserInputError`.
    """
    lookup = _op_lookup(space)
    positions = len(lookup)
    if lookup and all(table == lookup[0] for table in lookup) and all(not isinstance(a, str) for a in archs):
        # fast path: every position offers the same operations
        try:
            if any(len(a) != positions for a in archs):
                raise KeyError
            flat = np.fromiter(map(lookup[0].__getitem__, itertools.chain.from_iterable(archs)),
                               dtype=np.int64, count=len(archs) * positions)
            return flat.reshape(len(archs), positions)
        except (KeyError, TypeError, ValueError):
            pass  # the slow path below names the culprit
    search_space = get_space(space)
    rows = []
    for arch in archs:
        if isinstance(arch, str):
            arch = search_space.from_string(arch)
        try:
            if len(arch) != positions:
                raise KeyError(arch)
            rows.append([table[op] for table, op in zip(lookup, arch)])
        except (KeyError, TypeError):
            try:
                search_space.validate(arch)
                problem = "unknown operation"
            except (ValueError, TypeError) as error:
                problem = str(error)
            raise UserInputError(f"{arch!r} is not a {space} architecture: {problem}") from None
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), positions)


def one_hot(space: str, codes: np.ndarray) -> np.ndarray:
    """``[n, sum of choices]`` float32 one-hot code (same layout as ``SearchSpace.encode``)."""
    sizes = [len(c) for c in get_space(space).choices]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = np.zeros((len(codes), sum(sizes)), dtype=np.float32)
    if len(codes):
        out[np.arange(len(codes))[:, None], codes + offsets] = 1.0
    return out


def _hash_rows(codes: np.ndarray) -> np.ndarray:
    weights = np.random.default_rng(12345).integers(1, 2 ** 62, size=codes.shape[1], dtype=np.int64)
    with np.errstate(over="ignore"):
        return (codes * weights).sum(axis=1)  # wraps modulo 2**64; rows are verified after lookup


@functools.lru_cache(maxsize=None)
def _table_index(space: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = op_codes(space, [get_space(space)._parse(s) for s in benchmarks.arch_strings(space)])
    keys = _hash_rows(codes)
    order = np.argsort(keys, kind="stable")
    return codes, keys[order], order


def table_rows(space: str, codes: np.ndarray) -> np.ndarray:
    """Benchmark row of each architecture, ``-1`` where the table has none."""
    table_codes, sorted_keys, order = _table_index(space)
    if not len(codes):
        return np.zeros(0, dtype=np.int64)
    position = np.minimum(np.searchsorted(sorted_keys, _hash_rows(codes)), len(order) - 1)
    rows = order[position]
    found = (table_codes[rows] == codes).all(axis=1)
    return np.where(found, rows, -1)


@functools.lru_cache(maxsize=None)
def _additive_costs(space: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-(position, operation) FLOPs and parameter tables; both are exactly
    additive over positions in the two spaces (checked in the tests)."""
    search_space = get_space(space)
    base = search_space.default_arch()
    base_cost = np.array([search_space.flops(base), search_space.num_params(base)], dtype=np.float64)
    sizes = [len(c) for c in search_space.choices]
    table = np.zeros((2, len(sizes), max(sizes)))
    for position, ops in enumerate(search_space.choices):
        for k, op in enumerate(ops):
            arch = list(base)
            arch[position] = op
            cost = np.array([search_space.flops(tuple(arch)), search_space.num_params(tuple(arch))])
            table[:, position, k] = cost - base_cost
    constant = base_cost
    return table, constant


def flops_and_params(space: str, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Analytic multiply-accumulates and parameter counts of each architecture."""
    if space == "slm":  # not additive over genes: computed from each layout
        costs = slm_costs(codes)
        return costs[:, SLM_COSTS.index("flops")], costs[:, SLM_COSTS.index("params")]
    table, constant = _additive_costs(space)
    positions = np.arange(codes.shape[1])
    flops = constant[0] + table[0][positions, codes].sum(axis=1)
    params = constant[1] + table[1][positions, codes].sum(axis=1)
    return flops, params


class SourceLatencies:
    """Latency in ms of any architecture on a fixed set of source devices.

    Recorded values where the benchmark table has the architecture; elsewhere
    (FBNet archs outside the 5,000 samples) an additive per-layer latency
    model fitted on the table, i.e. a multi-output latency regressor. For
    ``slm``, whose 200 recorded architectures cannot pin one value per
    layer, operator and width, the model is a non-negative sum of the
    decode step's costs (:data:`SLM_COSTS`: multiply-accumulates, states,
    runtime nodes...), which holds at widths and depths between and beyond
    the recorded ones.
    """

    def __init__(self, space: str, devices: Sequence[str], coefficients: np.ndarray | None = None,
                 ridge: float = 1e-2):
        self.space = space
        self.devices = tuple(devices)
        table = benchmarks.latency_table(space)
        self._columns = np.stack([table.column(d) for d in self.devices], axis=1)
        if coefficients is not None and len(coefficients) != self._design_size():
            coefficients = None  # written for another form of the model: fitted again (deterministic)
        if coefficients is None:
            codes = op_codes(space, [get_space(space)._parse(s) for s in benchmarks.arch_strings(space)])
            design = self._design(codes)
            if space == "slm":
                from scipy.optimize import nnls

                scale = np.maximum(np.abs(design).max(axis=0), 1e-12)
                coefficients = np.stack([nnls(design / scale, self._columns[:, k])[0] / scale
                                         for k in range(len(self.devices))], axis=1)
            else:
                gram = design.T @ design + ridge * np.eye(design.shape[1])
                coefficients = np.linalg.solve(gram, design.T @ self._columns)
        self.coefficients = np.asarray(coefficients, dtype=np.float64)

    def _design_size(self) -> int:
        if self.space == "slm":
            return len(SLM_COSTS) + 1
        return one_hot(self.space, np.zeros((1, len(get_space(self.space).choices)), dtype=np.int64)).shape[1] + 1

    def _design(self, codes: np.ndarray) -> np.ndarray:
        """The model's inputs for ``codes``, a constant 1 last."""
        features = slm_costs(codes) if self.space == "slm" else one_hot(self.space, codes).astype(np.float64)
        return np.concatenate([features, np.ones((len(codes), 1))], axis=1)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """``[n, devices]`` latency in ms."""
        rows = table_rows(self.space, codes)
        out = np.empty((len(codes), len(self.devices)))
        known = rows >= 0
        out[known] = self._columns[rows[known]]
        if not known.all():
            out[~known] = np.maximum(self._design(codes[~known]) @ self.coefficients, 1e-3)
        return out


@functools.lru_cache(maxsize=None)
def _cost_table(space: str) -> np.ndarray:
    """``[positions, choices, k]`` hardware-independent cost features per
    operation: NB201, whether each non-``none`` operation is used (op counts);
    FBNet, 1x1 and depthwise multiply-accumulates, activation traffic,
    parameters, convolution count, grouped convs and 5x5 kernels."""
    search_space = get_space(space)
    if space == "nb201":
        table = np.zeros((len(search_space.choices), 5, 4))
        for k in range(1, 5):
            table[:, k, k - 1] = 1.0
        return table
    if space == "fbnet":
        from nas.search_space.fbnet import CANDIDATES, layer_shapes, parse_candidate
        shapes = layer_shapes()
        table = np.zeros((len(shapes), len(CANDIDATES), 7))
        resolution = 32
        for layer, (c_in, c_out, stride) in enumerate(shapes):
            out_res = resolution // stride
            for k, op in enumerate(CANDIDATES):
                if op == "skip":
                    if c_in != c_out or stride != 1:
                        table[layer, k] = [c_in * c_out * out_res ** 2, 0, c_in * resolution ** 2 + c_out * out_res ** 2,
                                           c_in * c_out, 1, 0, 0]
                    continue
                kernel, expansion, groups = parse_candidate(op)
                hidden = c_in * expansion
                table[layer, k] = [
                    c_in * hidden / groups * resolution ** 2 + hidden * c_out / groups * out_res ** 2,
                    hidden * kernel * kernel * out_res ** 2,
                    c_in * resolution ** 2 + 2 * hidden * resolution ** 2 + hidden * out_res ** 2 + c_out * out_res ** 2,
                    c_in * hidden / groups + hidden * kernel * kernel + hidden * c_out / groups,
                    3, float(groups > 1), float(kernel == 5)]
            resolution = out_res
        return table
    raise UserInputError(f"no cost features for space {space!r}")


def cost_features(space: str, codes: np.ndarray) -> np.ndarray:
    """``[n, k]`` additive, hardware-independent cost features (see ``_cost_table``;
    for ``slm``, :data:`SLM_COSTS` but FLOPs)."""
    if space == "slm":
        return slm_costs(codes)[:, [i for i, name in enumerate(SLM_COSTS) if name != "flops"]]
    table = _cost_table(space)
    out = np.zeros((len(codes), table.shape[2]))
    for position in range(codes.shape[1]):
        out += table[position, codes[:, position]]
    return out


# --- HELP's architecture encodings -------------------------------------------------------
#: width of one FBNet layer in HELP's factorised code: kernel 3 / 5, then expansion
#: e1 / e1 with 2 groups / e3 / e6; ``skip`` is all zeros
FBNET_LAYER_CODE = 6


@functools.lru_cache(maxsize=None)
def _nb201_help_graphs() -> np.ndarray:
    """HELP's graph of every NB201 cell (table order), flat ``[81 aggregation | 72 features]``.

    Nodes: the 8 operation-on-node nodes of ``encode_graph`` plus one global
    node that every node feeds. The aggregation matrix (row = receiving node)
    holds the directed edges and self-loops, unnormalised; features are the 7
    node types plus a global-node flag.
    """
    search_space = get_space("nb201")
    strings = benchmarks.arch_strings("nb201")
    out = np.zeros((len(strings), 81 + 72), dtype=np.float32)
    for row, string in enumerate(strings):
        adjacency, features = search_space.encode_graph(search_space._parse(string))
        edges = np.zeros((9, 9), dtype=np.float32)
        edges[:8, :8] = adjacency
        edges[:8, 8] = 1.0  # every node feeds the global node
        np.fill_diagonal(edges, 1.0)
        nodes = np.zeros((9, 8), dtype=np.float32)
        nodes[:8, :7] = features
        nodes[8, 7] = 1.0
        out[row, :81] = edges.T.ravel()  # a node sums over its sources
        out[row, 81:] = nodes.ravel()
    return out


def help_encoding(space: str, codes: np.ndarray) -> np.ndarray:
    """``[n, width]`` float32 input of HELP's latency network.

    NB201: the flat global-node graph (153 values; architectures outside
    the table are an error). FBNet: the factorised per-layer code (132
    values). Other spaces: the one-hot code.
    """
    if space == "nb201":
        rows = table_rows("nb201", codes)
        if np.any(rows < 0):
            raise UserInputError("an NB201 architecture is not among the 15,625 cells of the table")
        return _nb201_help_graphs()[rows]
    if space == "slm":
        return slm_layer_codes(codes)
    if space == "fbnet":
        from nas.search_space.fbnet import CANDIDATES, parse_candidate

        table = np.zeros((len(CANDIDATES), FBNET_LAYER_CODE), dtype=np.float32)
        expansions = {(1, 1): 2, (1, 2): 3, (3, 1): 4, (6, 1): 5}
        for k, op in enumerate(CANDIDATES):
            if op != "skip":
                kernel, expansion, groups = parse_candidate(op)
                table[k, 0 if kernel == 3 else 1] = 1.0
                table[k, expansions[expansion, groups]] = 1.0
        return table[codes].reshape(len(codes), -1)
    return one_hot(space, codes)


# --- slm: layouts of variable depth ------------------------------------------------------
#: hardware-independent costs of one generated token, per slm architecture: ``flops``
#: (multiply-accumulates after 512 tokens), ``params``, ``dense_macs`` (everything but
#: attention over the cache), ``attention_macs_per_token`` (full attention's MACs per
#: cached token: times the context it is the cache cost), ``window_macs`` (sliding-window
#: attention over its full window), ``state_elements`` (recurrent and conv states read and
#: written), ``layers``, the count of each mixer type and of FFNs, the width,
#: ``operators`` (nodes ONNX Runtime runs per decode step, see :data:`SLM_RUNTIME_NODES`),
#: ``cache_per_token`` (full-attention key and value elements stored per cached token, grouped
#: KV heads) and ``mixer_macs`` / ``ffn_macs`` (the dense work of mixers and of FFNs apart)
SLM_COSTS = ("flops", "params", "dense_macs", "attention_macs_per_token", "window_macs", "state_elements",
             "layers", "A", "SWA", "M2", "D", "GD", "F", "width", "operators", "cache_per_token",
             "mixer_macs", "ffn_macs")

#: nodes of each layer type (with its pre-norm) in an slm decode-step graph after ONNX
#: Runtime's graph optimisation (level ``all``), the same at every width: attention spends
#: most of its nodes on shapes, RoPE and the cache, a recurrent mixer has one fused
#: LinearAttention node; at batch 1 every node's launch costs about as much as a small
#: matrix product, so this count is what per-operator overhead pays for
SLM_RUNTIME_NODES = {"A": 120, "SWA": 122, "M2": 55, "D": 55, "GD": 68, "F": 7}
#: nodes outside the layers (embedding, final norm, output projection, shared positions)
SLM_GRAPH_NODES = 4


@functools.lru_cache(maxsize=1 << 16)
def _slm_row(code: tuple[int, ...]) -> tuple[tuple[float, ...], bytes]:
    from nas.search_space.slm import operators
    from nas.search_space.slm.model import WINDOW
    from nas.search_space.slm.space import layer_cost

    search_space = get_space("slm")
    arch = tuple(ops[c] for ops, c in zip(search_space.choices, code))
    layers, width = search_space.layers(arch), search_space.width(arch)
    heads = max(1, width // operators.HEAD_DIM)
    per_token = sum(2 * heads * operators.HEAD_DIM for layer in layers if layer == "A")
    window = sum(2 * heads * operators.HEAD_DIM * WINDOW for layer in layers if layer == "SWA")
    # layer_cost at context 0 attends to the token itself once: that is attention, not dense work
    dense = (sum(layer_cost(layer, width, 0)[0] for layer in layers) + width * 256
             - sum(2 * heads * operators.HEAD_DIM for layer in layers if layer in ("A", "SWA")))
    inner = operators.MAMBA_EXPAND * width
    states = {"M2": (inner // operators.HEAD_DIM) * operators.MAMBA_STATE * operators.HEAD_DIM
              + (inner + 2 * operators.MAMBA_STATE) * (operators.CONV_KERNEL - 1),
              "D": heads * operators.HEAD_DIM ** 2 + 3 * heads * operators.HEAD_DIM * (operators.CONV_KERNEL - 1)}
    states["GD"] = states["D"]
    cache = sum(2 * operators.kv_heads_for(heads) * operators.HEAD_DIM for layer in layers if layer == "A")
    ffn_macs = sum(layer_cost(layer, width, 0)[0] for layer in layers if layer == "F")
    values = (search_space.flops(arch), search_space.num_params(arch), dense, per_token, window,
              sum(states.get(layer, 0) for layer in layers), len(layers),
              *(layers.count(kind) for kind in ("A", "SWA", "M2", "D", "GD", "F")), width,
              SLM_GRAPH_NODES + sum(SLM_RUNTIME_NODES[layer] for layer in layers), cache, dense - ffn_macs - width * 256,
              ffn_macs)
    return tuple(float(v) for v in values), search_space._encode_valid(arch).tobytes()


def slm_costs(codes: np.ndarray) -> np.ndarray:
    """``[n, len(SLM_COSTS)]`` costs of slm architectures given by gene codes."""
    return np.array([_slm_row(tuple(row))[0] for row in np.asarray(codes).tolist()],
                    dtype=np.float64).reshape(len(codes), len(SLM_COSTS))


def slm_layer_codes(codes: np.ndarray) -> np.ndarray:
    """``[n, encoding_size]`` layer-wise code (:meth:`SlmSpace.encode`) of slm architectures given by gene codes."""
    size = get_space("slm").encoding_size
    return np.stack([np.frombuffer(_slm_row(tuple(row))[1], dtype=np.float32) for row in np.asarray(codes).tolist()]
                    ) if len(codes) else np.zeros((0, size), np.float32)
