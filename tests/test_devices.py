"""The device catalog extended by the user's own device files."""

import pytest

from nas.devices import (Device, DeviceFileError, catalog_problems, get_device, list_devices, resolve_device,
                         user_devices_dir, write_user_device)
from nas.errors import UserInputError

BOARD = """\
name: lab-board
description: a single-board computer on the bench
category: board
profiler:
  kind: remote
  settings:
    url: http://192.168.1.20:8765
spaces: [nb201]
"""


@pytest.fixture(autouse=True)
def user_folder(tmp_path, monkeypatch):
    folder = tmp_path / "devices"
    folder.mkdir()
    monkeypatch.setenv("NAS_DEVICES", str(folder))
    return folder


def test_the_folder_defaults_to_the_users_config_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("NAS_DEVICES")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert user_devices_dir() == tmp_path / "config" / "nas" / "devices"


def test_a_user_device_file_extends_the_catalog(user_folder):
    (user_folder / "lab-board.yaml").write_text(BOARD)
    board = get_device("lab-board")
    assert board.profiler_kind == "remote" and board.settings["url"].endswith(":8765")
    assert board.spaces == ("nb201",) and board.source.endswith("lab-board.yaml")
    assert {"lab-board", "pixel7", "local-cpu"} <= {d.name for d in list_devices()}


@pytest.mark.parametrize("text, line, field", [
    (BOARD.replace("  kind: remote", "  kind: [remote]"), 5, "profiler.kind"),
    (BOARD.replace("spaces: [nb201]", "spaces: nb201"), 8, "spaces"),
    (BOARD.replace("category: board", "categroy: board"), 3, "categroy"),
    (BOARD.replace("    url:", "    url: [\n"), 9, ""),
    (BOARD.replace("name: lab-board", "name: lab board!"), 1, "name"),
    (BOARD.replace("  settings:", "  setings:"), 6, "profiler.setings"),
])
def test_a_malformed_file_is_named_with_its_line_and_field_and_hides_nothing(user_folder, text, line, field):
    (user_folder / "lab-board.yaml").write_text(text)
    (user_folder / "good.yaml").write_text(BOARD.replace("lab-board", "good"))
    [problem] = catalog_problems()
    assert problem.path.name == "lab-board.yaml" and problem.line == line and problem.field == field
    assert f"lab-board.yaml:{line}" in str(problem)
    names = {d.name for d in list_devices()}
    assert {"good", "pixel7", "local-cpu"} <= names and "lab-board" not in names
    with pytest.raises(DeviceFileError, match=f"lab-board.yaml:{line}"):
        get_device("lab-board")
    assert get_device("good").profiler_kind == "remote"


def test_a_user_file_cannot_take_a_shipped_name(user_folder):
    (user_folder / "mine.yaml").write_text(BOARD.replace("lab-board", "pixel7"))
    assert "shipped catalog device" in str(catalog_problems()[0])
    assert get_device("pixel7").hardware["soc"] == "Google Tensor G2"
    with pytest.raises(UserInputError, match="shipped"):
        write_user_device(Device("pixel7", "", "", "remote", {"url": "http://x:1"}))


def test_written_devices_read_back_and_are_not_overwritten_by_accident(user_folder):
    device = Device("bench-pi", "Raspberry Pi on the bench", "board", "remote",
                    {"agents": ["http://10.0.0.2:8765", "http://10.0.0.3:8765"]}, spaces=("nb201",))
    path = write_user_device(device)
    assert path == user_folder / "bench-pi.yaml"
    assert get_device("bench-pi").settings == device.settings
    with pytest.raises(UserInputError, match="--force"):
        write_user_device(device)
    write_user_device(device, overwrite=True)


def test_an_unknown_name_is_a_device_only_with_measurements_from_elsewhere():
    with pytest.raises(UserInputError, match="nas devices add my-board"):
        resolve_device("my-board")
    board = resolve_device("my-board", unlisted_ok=True)
    assert board.name == "my-board" and not board.listed
    assert resolve_device("pixel7", unlisted_ok=True).listed
    with pytest.raises(UserInputError, match="letters, digits"):
        resolve_device("../etc", unlisted_ok=True)
