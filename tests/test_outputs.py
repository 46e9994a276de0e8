"""Outputs are checked before the work starts: an unwritable --out is exit 2 at once."""

import pytest

from nas.cli import main
from nas.errors import UserInputError
from nas.outputs import check_output_dir, check_output_file
from nas.predictors import shipped_checkpoint_path

UNWRITABLE = "/proc/1/nas-out"  # even root cannot create files in /proc


def test_a_file_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="is a file"):
        check_output_file(blocker / "out.csv")
    with pytest.raises(UserInputError, match="is a file"):
        check_output_dir(blocker)


def test_writable_places_pass_and_nothing_is_created(tmp_path):
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert check_output_file(tmp_path / "x" / "m.onnx").name == "m.onnx"
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserInputError, match="is a folder"):
        check_output_file(tmp_path)


@pytest.mark.parametrize("argv", [
    ["search", "--space", "nb201", "--device", "pixel2", "--latency", "14ms", "--out", UNWRITABLE],
    ["export", "--space", "nb201", "--arch", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
     "--out", UNWRITABLE + "/m.onnx"],
    ["predictor", "finetune", "--space", "nb201", "--device", "pixel2", "--out", UNWRITABLE + "/p.npz"],
    ["profile", "--device", "pixel2", "--space", "nb201", "--num", "1", "--out", UNWRITABLE + "/m.csv"],
])
def test_commands_refuse_an_unwritable_out_before_working(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_STORE", str(tmp_path / "store.db"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "Traceback" not in err


def test_predict_refuses_an_unwritable_out(capsys, tmp_path):
    archs = tmp_path / "archs.txt"
    archs.write_text("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    argv = ["predictor", "predict", "--predictor", str(shipped_checkpoint_path("nb201", "default")),
            "--archs", str(archs), "--out", UNWRITABLE + "/p.csv"]
    assert main(argv) == 2
    assert "--out" in capsys.readouterr().err
