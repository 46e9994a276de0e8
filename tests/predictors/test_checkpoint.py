"""Checkpoint files that are not what they claim: a message naming the file, never a traceback."""

import numpy as np
import pytest

from nas.errors import UserInputError
from nas.predictors import load_predictor, shipped_checkpoint_path


@pytest.fixture
def good_bytes():
    return shipped_checkpoint_path("nb201", "default").read_bytes()


def _refusal(path):
    with pytest.raises(UserInputError) as caught:
        load_predictor(path)
    message = str(caught.value)
    assert str(path) in message and "rebuild" in message
    return message


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_refused_with_a_way_forward(tmp_path, good_bytes, keep):
    path = tmp_path / "cut.npz"
    path.write_bytes(good_bytes[: int(len(good_bytes) * keep)])
    _refusal(path)


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7, 0.95])
def test_bit_flipped_checkpoint_is_refused(tmp_path, good_bytes, where):
    data = bytearray(good_bytes)
    data[int(len(data) * where)] ^= 0x10
    path = tmp_path / "flipped.npz"
    path.write_bytes(bytes(data))
    try:
        load_predictor(path)  # a flip in slack bytes may leave the file intact; then it must load cleanly
    except UserInputError as error:
        assert str(path) in str(error)


def test_foreign_files_are_named_without_talk_of_allow_pickle(tmp_path):
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.ones(3))
    text = tmp_path / "notes.npz"
    text.write_text("not a checkpoint")
    for path in (pickled, plain, text):
        message = _refusal(path)
        assert "allow_pickle" not in message
