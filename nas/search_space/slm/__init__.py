"""The ``slm`` space: hybrid byte-level language models (attention, Mamba2,
DeltaNet, Gated DeltaNet, SwiGLU FFNs) after Nemotron-Flash.

- :mod:`nas.search_space.slm.operators`: the mixers, chunked and recurrent;
- :mod:`nas.search_space.slm.model`: the language model with explicit decode states;
- :mod:`nas.search_space.slm.space`: the space (genes, canonical string, mutations, encoding, costs).
"""

from nas.search_space.slm.model import SmallLanguageModel
from nas.search_space.slm.space import MAX_OPERATORS, WIDTHS, SlmSpace

__all__ = ["MAX_OPERATORS", "WIDTHS", "SlmSpace", "SmallLanguageModel"]
