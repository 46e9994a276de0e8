"""Exported ONNX models run in ONNX Runtime and match torch."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nas.cli import main
from nas.export import INPUT_NAME, OPSET, OUTPUT_NAME, export_arch
from nas.search_space import get_space

#: absolute tolerance on logits of freshly initialised networks (float32)
ATOL = 1e-4


@pytest.mark.parametrize("space_name, indices", [("nb201", (0, 1, 777, 15_624)), ("fbnet", (0, 1, 2))])
def test_onnx_matches_torch(tmp_path, space_name, indices):
    space = get_space(space_name)
    batch = np.random.default_rng(0).standard_normal((3, *space.input_shape)).astype(np.float32)
    for index in indices:
        arch = space.from_index(index)
        torch.manual_seed(index)
        model = space.build(arch).eval()
        path = export_arch(space_name, arch, tmp_path / f"{index}.onnx", model=model)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=1e-3)


def test_graph_has_dynamic_batch_and_opset(tmp_path):
    path = export_arch("nb201", get_space("nb201").from_index(5), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    assert model.graph.output[0].name == OUTPUT_NAME


def test_cli_export_writes_a_runnable_model(tmp_path, capsys):
    arch = get_space("nb201").to_string(get_space("nb201").from_index(9))
    out = tmp_path / "model.onnx"
    assert main(["export", "--space", "nb201", "--arch", arch, "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = session.run(None, {INPUT_NAME: np.zeros((5, 3, 32, 32), np.float32)})[0]
    assert logits.shape == (5, 10)
    assert "freshly initialised" in capsys.readouterr().out


def test_cli_export_rejects_a_bad_arch(tmp_path, capsys):
    assert main(["export", "--space", "nb201", "--arch", "|conv~0|", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "not a nb201 architecture" in capsys.readouterr().err


def _logits_shape(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: np.zeros((2, 3, 32, 32), np.float32)})[0].shape


def test_cli_export_takes_the_class_count_from_classes_dataset_or_a_search_result(tmp_path, capsys):
    import json

    space = get_space("nb201")
    arch = space.to_string(space.from_index(9))
    assert main(["export", "--space", "nb201", "--arch", arch, "--classes", "100", "--out", str(tmp_path / "a.onnx")]) == 0
    assert _logits_shape(tmp_path / "a.onnx") == (2, 100) and "[batch,100]" in capsys.readouterr().out
    assert main(["export", "--space", "nb201", "--arch", arch, "--dataset", "imagenet16-120",
                 "--out", str(tmp_path / "b.onnx")]) == 0
    assert _logits_shape(tmp_path / "b.onnx") == (2, 120)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps({"space": "nb201", "arch": arch, "num_classes": 100}))
    assert main(["export", "--result", str(tmp_path / "run"), "--out", str(tmp_path / "c.onnx")]) == 0
    assert _logits_shape(tmp_path / "c.onnx") == (2, 100)


def test_cli_export_refuses_contradictions_and_a_missing_architecture(tmp_path, capsys):
    import json

    arch = get_space("nb201").to_string(get_space("nb201").from_index(9))
    assert main(["export", "--space", "nb201", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "--result" in capsys.readouterr().err
    assert main(["export", "--space", "nb201", "--arch", arch, "--classes", "10", "--dataset", "cifar100",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "contradicts" in capsys.readouterr().err
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"space": "nb201", "arch": None, "status": "over_budget"}))
    assert main(["export", "--result", str(result), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "names no architecture" in capsys.readouterr().err
