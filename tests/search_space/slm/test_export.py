"""The exported decode and prefill graphs reproduce the PyTorch model in ONNX Runtime."""

import numpy as np
import onnx
import pytest
import torch

from nas.cli import main
from nas.export import export_slm, prefill_path
from nas.search_space import get_space
from nas.search_space.slm.runtime import OnnxLanguageModel, SlmTimer, session

#: absolute tolerance on logits (float32, freshly initialised weights)
ATOL = 1e-4
EVERY_MIXER = "SWA F M2 F | GD D | A F @64"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    space = get_space("slm")
    torch.manual_seed(0)
    model = space.build(space.from_string(EVERY_MIXER)).eval()
    folder = tmp_path_factory.mktemp("slm")
    decode, prefill = export_slm(EVERY_MIXER, folder / "model.onnx", model=model, prompt_length=6)
    return model, decode, prefill


def test_decode_graph_token_by_token_matches_pytorch(exported):
    model, decode, _ = exported
    tokens = torch.randint(0, 256, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(tokens).numpy()
    runner = OnnxLanguageModel(decode)
    states = runner._empty_states(2)
    for t in range(tokens.shape[1]):
        logits, states = runner._step(tokens[:, t].numpy(), t, states)
        np.testing.assert_allclose(logits, expected[:, t], atol=ATOL)


def test_prefill_graph_hands_its_states_to_the_decode_graph(exported):
    model, decode, prefill = exported
    assert prefill == prefill_path(decode)
    prompt = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.generate(prompt, 5).numpy()
    runner = OnnxLanguageModel(decode, prefill)
    np.testing.assert_array_equal(runner.generate(prompt.numpy(), 5), expected)
    # a prompt of another length goes through the decode graph
    np.testing.assert_array_equal(OnnxLanguageModel(decode, prefill).generate(prompt[:, :4].numpy(), 3),
                                  model.generate(prompt[:, :4], 3).numpy())


def test_graph_interface(exported):
    model, decode, prefill = exported
    graph = onnx.load(str(decode))
    names = [i.name for i in graph.graph.input]
    assert names == ["token", "position", *model.state_names()]
    assert [o.name for o in graph.graph.output] == ["logits", *(f"present_{n}" for n in model.state_names())]
    cache = next(i for i in graph.graph.input if i.name.endswith("_A_key"))
    assert cache.type.tensor_type.shape.dim[2].dim_param == "past"
    # recurrent mixers use ONNX Runtime's fused linear-attention step
    assert any(node.op_type == "LinearAttention" and node.domain == "com.microsoft" for node in graph.graph.node)
    meta = {p.key: p.value for p in onnx.load(str(prefill)).metadata_props}
    assert meta["nas.slm.prompt_length"] == "6" and meta["nas.slm.arch"] == EVERY_MIXER


def test_timers_feed_states_of_the_context(exported):
    _, decode, prefill = exported
    timer = SlmTimer(decode, context_length=40, batch_size=3)
    assert timer.feed["l6_A_key"].shape[:3] == (3, 1, 40) and timer.feed["position"].tolist() == [40]
    assert timer(2).shape == (2,)
    assert SlmTimer(prefill, context_length=6)(1).shape == (1,)
    with pytest.raises(ValueError, match="6-token prompts"):
        SlmTimer(prefill, context_length=7)
    assert session(decode).get_outputs()[0].name == "logits"


def test_cli_export_writes_decode_and_prefill_graphs(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--space", "slm", "--arch", "D F | A | - @64", "--out", str(out),
                 "--context-length", "8"]) == 0
    assert out.is_file() and (tmp_path / "m.prefill.onnx").is_file()
    assert "decode step" in capsys.readouterr().out
    assert main(["export", "--space", "slm", "--arch", "D F | A | - @64", "--out", str(tmp_path / "x.onnx"),
                 "--context-length", "-3"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["export", "--space", "slm", "--arch", "D F | Q | - @64", "--out", str(tmp_path / "y.onnx")]) == 2
    assert "unknown operator 'Q'" in capsys.readouterr().err
