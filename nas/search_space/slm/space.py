"""The ``slm`` space: hybrid byte-level language models after Nemotron-Flash.

Template (the paper's, scaled for a 2-core CPU):

- three stages (early, middle, late); each repeats one *block type* some
  number of times. A block type holds one mixer type alone, or two types in
  a ratio 1:1, 1:2 or 1:3 (the first type once, then the second type r
  times), and every mixer in it is followed by 0, 1 or 2 SwiGLU FFNs;
- mixers: ``A`` full attention, ``SWA`` sliding-window attention (window
  256 bytes), ``M2`` Mamba2, ``D`` DeltaNet, ``GD`` Gated DeltaNet; ``F`` the FFN;
- blocks per stage: 1..8 in the first two stages, 0..8 in the last; the
  operator count (mixers plus FFNs) is capped at :data:`MAX_OPERATORS` (24;
  the paper used 30 at 1B scale) by dropping blocks from the last stage,
  then the middle one, then the first (never below one block there; the
  largest block has 12 operators, so two of them always fit);
- byte vocabulary (256); width from :data:`WIDTHS` (64..256, head size 32).
  Width is not searched as a gene: a search fixes the layout, then takes
  the widest width whose latency meets its budget, so layouts compete on
  loss alone. It is part of the architecture all the same (``@128``).

An architecture is the tuple of 16 genes ``(mixer, second mixer or '-',
ratio, FFNs per mixer, blocks) x 3 stages + (width,)``; its canonical string
is the flat layer list, stages separated by ``|``, an empty last stage
written ``-``, then ``@width``, e.g. ``D F M2 F | A F M2 F | D F M2 F @128``.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from nas.search_space import register_space
from nas.search_space.base import Arch, SearchSpace
from nas.search_space.slm import operators as ops
from nas.search_space.slm.model import FFN, FFN_EXPANSION, MIXERS, VOCAB, WINDOW, SmallLanguageModel

MAX_OPERATORS = 24
WIDTHS = (64, 96, 128, 160, 192, 224, 256)
STAGES = 3
MAX_BLOCKS = 8
RATIOS = ("1:1", "1:2", "1:3")
FFN_COUNTS = ("0", "1", "2")
NONE = "-"
#: genes of one stage, in order
STAGE_GENES = ("mixer", "second", "ratio", "ffns", "blocks")
#: the context length (tokens before the generated one) of :meth:`SlmSpace.flops`
DEFAULT_CONTEXT = 512
#: layer-wise encoding: one slot per operator, one-hot over these
ENCODED_LAYERS = MIXERS + (FFN,)


def _stage_choices(first_block: int) -> tuple[tuple[str, ...], ...]:
    return (MIXERS, (NONE,) + MIXERS, RATIOS, FFN_COUNTS,
            tuple(str(n) for n in range(first_block, MAX_BLOCKS + 1)))


def block_layers(mixer: str, second: str, ratio: str, ffns: str) -> list[str]:
    """Layers of one block: the mixer, then ``r`` times the second mixer, each followed by its FFNs."""
    mixers = [mixer] if second == NONE else [mixer] + [second] * int(ratio.split(":")[1])
    layers: list[str] = []
    for name in mixers:
        layers += [name] + [FFN] * int(ffns)
    return layers


def _block_size(stage: Sequence[str]) -> int:
    mixers = 1 if stage[1] == NONE else 1 + int(stage[2].split(":")[1])
    return mixers * (1 + int(stage[3]))


@register_space("slm")
class SlmSpace(SearchSpace):
    """Hybrid small language models; see the module docstring."""

    name = "slm"
    choices = _stage_choices(1) + _stage_choices(1) + _stage_choices(0) + (tuple(str(w) for w in WIDTHS),)
    input_shape = (DEFAULT_CONTEXT,)
    num_classes = VOCAB
    max_operators = MAX_OPERATORS
    widths = WIDTHS

    # --- structure ------------------------------------------------------------
    @staticmethod
    def stages(arch: Arch) -> list[tuple[str, ...]]:
        """The three stages' genes ``(mixer, second, ratio, ffns, blocks)``."""
        return [tuple(arch[5 * s:5 * s + 5]) for s in range(STAGES)]

    @staticmethod
    def width(arch: Arch) -> int:
        return int(arch[-1])

    def with_width(self, arch: Arch, width: int) -> Arch:
        """``arch`` at another width of the ladder (the layout unchanged)."""
        if width not in WIDTHS:
            raise ValueError(f"width {width} is not on the ladder {', '.join(map(str, WIDTHS))}")
        return self.validate(tuple(arch[:-1]) + (str(width),))

    def stage_layers(self, arch: Arch) -> list[list[str]]:
        """Flat layer names of each stage."""
        return [block_layers(*stage[:4]) * int(stage[4]) for stage in self.stages(arch)]

    def layers(self, arch: Arch) -> list[str]:
        """The flat layer list, e.g. ``['D', 'F', 'M2', 'F', 'A', 'F', ...]``."""
        return [layer for stage in self.stage_layers(arch) for layer in stage]

    def layout(self, arch: Arch) -> str:
        """The canonical string without the width."""
        return self.to_string(arch).rsplit("@", 1)[0].strip()

    @staticmethod
    def _operators(genes: Sequence[str]) -> int:
        return sum(_block_size(genes[5 * s:5 * s + 5]) * int(genes[5 * s + 4]) for s in range(STAGES))

    def normalize(self, genes: Sequence[str]) -> Arch:
        """Make genes consistent: a second mixer equal to the first is dropped,
        a lone mixer has ratio ``1:1``, an empty last stage has fixed genes,
        and blocks are dropped (last stage first) until the cap holds."""
        genes = list(genes)
        for s in range(STAGES):
            if genes[5 * s + 1] == genes[5 * s]:
                genes[5 * s + 1] = NONE
            if genes[5 * s + 1] == NONE:
                genes[5 * s + 2] = RATIOS[0]
        for s in (2, 1, 0):
            floor = 0 if s == 2 else 1
            while self._operators(genes) > MAX_OPERATORS and int(genes[5 * s + 4]) > floor:
                genes[5 * s + 4] = str(int(genes[5 * s + 4]) - 1)
        if genes[14] == "0":
            genes[10:14] = [MIXERS[0], NONE, RATIOS[0], FFN_COUNTS[0]]
        return tuple(genes)

    def validate(self, arch: Sequence[str]) -> Arch:
        arch = super().validate(arch)
        for s, stage in enumerate(self.stages(arch)):
            if stage[1] == stage[0]:
                raise ValueError(f"stage {s + 1} names mixer {stage[0]} twice; a block holds two different mixers")
            if stage[1] == NONE and stage[2] != RATIOS[0]:
                raise ValueError(f"stage {s + 1} has one mixer type, so its ratio is 1:1, not {stage[2]}")
        operators = self._operators(arch)
        if operators > MAX_OPERATORS:
            raise ValueError(f"the layout has {operators} operators, over the cap of {MAX_OPERATORS}; "
                             f"drop blocks from the last stage")
        if self.normalize(arch) != arch:
            raise ValueError("an empty last stage has no block type")
        return arch

    # --- canonical string ------------------------------------------------------------
    def to_string(self, arch: Arch) -> str:
        arch = self.validate(arch)
        stages = [" ".join(layers) if layers else NONE for layers in self.stage_layers(arch)]
        return f"{' | '.join(stages)} @{arch[-1]}"

    def _parse(self, text: str) -> Arch:
        layout, at, width = text.rpartition("@")
        if not at:
            raise ValueError(f"no width: end the layout with '@WIDTH', WIDTH one of {', '.join(map(str, WIDTHS))}")
        width = width.strip()
        if width not in {str(w) for w in WIDTHS}:
            raise ValueError(f"width {width!r} is not on the ladder {', '.join(map(str, WIDTHS))}")
        stages = layout.split("|")
        if len(stages) != STAGES:
            raise ValueError(f"expected {STAGES} stages separated by '|', got {len(stages)}")
        genes: list[str] = []
        for s, stage in enumerate(stages):
            tokens = stage.split()
            for token in tokens:
                if token not in ENCODED_LAYERS and token != NONE:
                    raise ValueError(f"unknown operator {token!r}; operators are {', '.join(ENCODED_LAYERS)}")
            if tokens == [NONE]:
                if s != STAGES - 1:
                    raise ValueError(f"stage {s + 1} is empty; only the last stage may be '-'")
                genes += [MIXERS[0], NONE, RATIOS[0], FFN_COUNTS[0], "0"]
                continue
            genes += _parse_stage(tokens, s)
        return tuple(genes) + (width,)

    # --- sampling and variation -----------------------------------------------
    def default_arch(self) -> Arch:
        """``D F M2 F | A F M2 F | D F M2 F @128`` (the paper's released layout, shortened)."""
        return ("D", "M2", "1:1", "1", "1", "A", "M2", "1:1", "1", "1", "D", "M2", "1:1", "1", "1", "128")

    def drift_reference_arch(self) -> Arch:
        """The fixed model timed around every cell for drift correction."""
        return self.default_arch()

    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniform genes (blocks, FFNs, mixers, ratio, width), made consistent by :meth:`normalize`."""
        return self.normalize(tuple(c[rng.integers(len(c))] for c in self.choices))

    @functools.cached_property
    def num_archs(self) -> int:
        """Layouts within the cap, times the widths (counted, not enumerated)."""
        import itertools

        ways = np.zeros(MAX_OPERATORS + 1, dtype=object)  # (block type, count >= 1) pairs per operator total
        for genes in itertools.product(*self.choices[:4]):
            if genes[1] != genes[0] and (genes[1] != NONE or genes[2] == RATIOS[0]):
                size = _block_size(genes)
                for blocks in range(1, MAX_BLOCKS + 1):
                    if size * blocks <= MAX_OPERATORS:
                        ways[size * blocks] += 1
        last = ways.copy()
        last[0] = 1  # the empty last stage
        total = sum(ways[a] * ways[b] * last[c] for a in range(MAX_OPERATORS + 1) for b in range(MAX_OPERATORS + 1)
                    for c in range(MAX_OPERATORS + 1) if a + b + c <= MAX_OPERATORS)
        return int(total) * len(WIDTHS)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change exactly one factor of one stage (the paper's four mutations):
        one mixer type of the block, the mixer ratio (``alone`` included), the
        FFNs per mixer, or the number of blocks (by one). The width is kept."""
        arch = self.validate(arch)
        for _ in range(100):
            child = self.normalize(self._mutation(list(arch), rng))
            if child != arch:
                return child
        raise RuntimeError(f"no mutation of {self.to_string(arch)} found")

    def _mutation(self, genes: list[str], rng: np.random.Generator) -> list[str]:
        stage = int(rng.integers(STAGES))
        base = 5 * stage
        kind = ("operator", "ratio", "ffns", "blocks")[int(rng.integers(4))]
        if genes[base + 4] == "0" and kind != "blocks":
            return genes  # an empty stage has only its block count to change
        if kind == "operator":
            slot = base if genes[base + 1] == NONE or rng.random() < 0.5 else base + 1
            other = genes[base + 1] if slot == base else genes[base]
            options = [m for m in MIXERS if m not in (genes[slot], other)]
            genes[slot] = options[int(rng.integers(len(options)))]
        elif kind == "ratio":
            current = "alone" if genes[base + 1] == NONE else genes[base + 2]
            options = [r for r in ("alone",) + RATIOS if r != current]
            new = options[int(rng.integers(len(options)))]
            if new == "alone":
                genes[base + 1] = NONE
            else:
                if genes[base + 1] == NONE:
                    seconds = [m for m in MIXERS if m != genes[base]]
                    genes[base + 1] = seconds[int(rng.integers(len(seconds)))]
                genes[base + 2] = new
        elif kind == "ffns":
            options = [f for f in FFN_COUNTS if f != genes[base + 3]]
            genes[base + 3] = options[int(rng.integers(len(options)))]
        else:
            allowed = [int(b) for b in self.choices[base + 4]]
            count = int(genes[base + 4])
            steps = [c for c in (count - 1, count + 1) if c in allowed]
            new = steps[int(rng.integers(len(steps)))]
            if count == 0:  # a stage coming back gets a random block type
                genes[base:base + 4] = [MIXERS[int(rng.integers(len(MIXERS)))], NONE, RATIOS[0],
                                        FFN_COUNTS[int(rng.integers(len(FFN_COUNTS)))]]
            genes[base + 4] = str(new)
        return genes

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Each stage (block type and count together) from ``a`` or ``b``; the width of ``a``."""
        a, b = self.validate(a), self.validate(b)
        genes: list[str] = []
        for s in range(STAGES):
            genes += (a if rng.random() < 0.5 else b)[5 * s:5 * s + 5]
        return self.normalize(genes + [a[-1]])

    # --- features for predictors ---------------------------------------------
    def encode(self, arch: Arch) -> np.ndarray:
        """Layer-wise code (float32): :data:`MAX_OPERATORS` slots, each one-hot
        over ``A SWA M2 D GD F`` (all zero past the last layer), then the width
        one-hot over the ladder."""
        return self._encode_valid(self.validate(arch))

    def _encode_valid(self, arch: Arch) -> np.ndarray:
        code = np.zeros((MAX_OPERATORS, len(ENCODED_LAYERS)), dtype=np.float32)
        for slot, layer in enumerate(self.layers(arch)):
            code[slot, ENCODED_LAYERS.index(layer)] = 1.0
        width = np.zeros(len(WIDTHS), dtype=np.float32)
        width[WIDTHS.index(self.width(arch))] = 1.0
        return np.concatenate([code.reshape(-1), width])

    @property
    def encoding_size(self) -> int:
        return MAX_OPERATORS * len(ENCODED_LAYERS) + len(WIDTHS)

    def decode(self, code: np.ndarray) -> Arch:
        from nas.errors import UserInputError

        raise UserInputError("an slm encoding cannot be decoded: the layer-wise code has no stage boundaries; "
                             "keep the architecture (or its canonical string) instead")

    # --- the shipped latency table ---------------------------------------------------
    def from_index(self, index: int) -> Arch:
        """Architecture ``index`` of the shipped latency table (``nas/data/slm``)."""
        from nas import benchmarks

        strings = benchmarks.arch_strings("slm")
        if not 0 <= index < len(strings):
            raise IndexError(f"slm table index {index} outside 0..{len(strings) - 1}")
        return self._parse(strings[index])

    def index_of(self, arch: Arch) -> int:
        from nas import benchmarks

        text = self.to_string(arch)
        try:
            return benchmarks.arch_strings("slm").index(text)
        except ValueError:
            raise KeyError(f"{text} is not in the slm latency table") from None

    def measured_archs(self) -> tuple[Arch, ...]:
        """The architectures of the shipped latency table, in index order."""
        from nas import benchmarks

        return tuple(self._parse(s) for s in benchmarks.arch_strings("slm"))

    # --- latency ------------------------------------------------------------------
    def latency_settings(self, device_settings: dict) -> dict:
        """What a latency of this space depends on beyond the runtime:
        ``context_length`` (tokens before the timed step, or the prompt length
        of a prefill; default 512) and ``phase`` (``decode``, the default, or
        ``prefill``), from a device's profiler settings."""
        from nas.errors import UserInputError
        from nas.search_space.slm.runtime import DEFAULT_CONTEXT_LENGTH, PHASES

        context = device_settings.get("context_length", DEFAULT_CONTEXT_LENGTH)
        phase = device_settings.get("phase", PHASES[0])
        if isinstance(context, bool) or not isinstance(context, int) or context < 1:
            raise UserInputError(f"profiler setting context_length must be a positive integer (tokens before the "
                                 f"timed step), not {context!r}")
        if phase not in PHASES:
            raise UserInputError(f"profiler setting phase must be one of {', '.join(PHASES)}, not {phase!r}")
        return {"context_length": context, "phase": phase}

    def export_for_latency(self, arch: Arch, path, settings: dict, seed: int = 0):
        """The graph a latency of ``settings`` times (decode step, or prefill
        of ``context_length`` tokens), freshly initialised from ``seed``, at ``path``."""
        import torch

        from nas.search_space.slm.graphs import export_decode, export_prefill

        torch.manual_seed(seed)
        model = self.build(arch).eval()
        if settings.get("phase", "decode") == "prefill":
            return export_prefill(model, path, settings["context_length"])
        return export_decode(model, path)

    # --- networks ----------------------------------------------------------------
    def build(self, arch: Arch, num_classes: int | None = None) -> SmallLanguageModel:
        """The byte-level model: ``forward(tokens [B, T]) -> logits [B, T, 256]``,
        plus ``prefill`` / ``step`` with explicit states (see :mod:`nas.search_space.slm.model`)."""
        arch = self.validate(arch)
        if num_classes not in (None, VOCAB):
            raise ValueError(f"slm models predict {VOCAB} bytes, not {num_classes} classes")
        return SmallLanguageModel(self.layers(arch), self.width(arch))

    def _cost(self, arch: Arch, context: int) -> tuple[int, int]:
        arch = self.validate(arch)
        d = self.width(arch)
        macs, params = d * VOCAB, VOCAB * d + d  # tied output projection; final norm
        for layer in self.layers(arch):
            layer_macs, layer_params = layer_cost(layer, d, context)
            macs, params = macs + layer_macs, params + layer_params + d  # + its pre-norm
        return macs, params

    def flops(self, arch: Arch, context_length: int = DEFAULT_CONTEXT) -> int:
        """Multiply-accumulates to generate one token at batch 1 after
        ``context_length`` tokens (projections, convolutions, recurrent state
        updates, attention over the cache; the output projection included)."""
        return self._cost(arch, context_length)[0]

    def num_params(self, arch: Arch) -> int:
        """Trainable parameters (matches ``build``; the output projection is tied)."""
        return self._cost(arch, DEFAULT_CONTEXT)[1]


def layer_cost(layer: str, d: int, context: int) -> tuple[int, int]:
    """(multiply-accumulates per generated token after ``context`` tokens, parameters) of one layer."""
    heads = max(1, d // ops.HEAD_DIM)
    hd = ops.HEAD_DIM
    k = ops.CONV_KERNEL
    if layer in ("A", "SWA"):
        kv = ops.kv_heads_for(heads)
        projections = 2 * d * heads * hd + 2 * d * kv * hd
        keys = context + 1 if layer == "A" else min(context + 1, WINDOW)
        return projections + 2 * heads * hd * keys, projections
    if layer == "M2":
        inner = ops.MAMBA_EXPAND * d
        m_heads, n = inner // hd, ops.MAMBA_STATE
        channels = inner + 2 * n
        proj = d * (2 * inner + 2 * n + m_heads) + inner * d
        params = proj + channels * (k + 1) + 3 * m_heads + inner
        return proj + channels * k + 3 * m_heads * n * hd + inner, params
    if layer in ("D", "GD"):
        inner = heads * hd
        proj = d * 3 * inner + d * heads + inner * d
        params = proj + 3 * inner * (k + 1) + hd
        macs = proj + 3 * inner * k + 4 * heads * hd * hd
        if layer == "GD":
            extra = d * heads + d * inner
            params += extra + 2 * heads
            macs += extra + heads * hd * hd
        return macs, params
    if layer == FFN:
        hidden = FFN_EXPANSION * d
        return 3 * d * hidden, 3 * d * hidden
    raise ValueError(f"unknown layer {layer!r}")


def _parse_stage(tokens: list[str], stage: int) -> list[str]:
    """Genes of one stage's flat layer list (its shortest repeating block)."""
    if not tokens:
        raise ValueError(f"stage {stage + 1} has no layers")
    n = len(tokens)
    period = next(p for p in range(1, n + 1) if n % p == 0 and tokens == tokens[:p] * (n // p))
    block = tokens[:period]
    if block[0] == FFN:
        raise ValueError(f"stage {stage + 1} starts with an FFN; every block starts with a mixer")
    mixers, ffns = [], []
    for token in block:
        if token == FFN:
            ffns[-1] += 1
        else:
            mixers.append(token)
            ffns.append(0)
    if len(set(ffns)) != 1 or ffns[0] > 2:
        raise ValueError(f"stage {stage + 1}: every mixer of a block is followed by the same number (0, 1 or 2) "
                         f"of FFNs, got {' '.join(block)}")
    first, rest = mixers[0], mixers[1:]
    if rest and (len(set(rest)) != 1 or rest[0] == first or len(rest) > 3):
        raise ValueError(f"stage {stage + 1}: a block is one mixer type, or two in a ratio 1:1, 1:2 or 1:3 "
                         f"(first type once, then the second), got {' '.join(block)}")
    second = rest[0] if rest else NONE
    ratio = f"1:{len(rest)}" if rest else RATIOS[0]
    blocks = n // period
    if blocks > MAX_BLOCKS:
        raise ValueError(f"stage {stage + 1} repeats its block {blocks} times; at most {MAX_BLOCKS}")
    return [first, second, ratio, str(ffns[0]), str(blocks)]


__all__ = ["DEFAULT_CONTEXT", "MAX_OPERATORS", "WIDTHS", "SlmSpace", "block_layers", "layer_cost"]
