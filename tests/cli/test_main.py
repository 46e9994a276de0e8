"""The top-level command line: light commands answer without importing torch."""

import subprocess
import sys

import pytest

PROBE = """
import sys
from nas.cli import main
try:
    code = main({argv!r})
except SystemExit as stop:
    code = stop.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code)
"""


@pytest.mark.parametrize("argv, exit_code", [(["--help"], 0), (["devices", "list"], 0), (["serch"], 2), ([], 2)])
def test_light_commands_do_not_import_torch(argv, exit_code):
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True)
    assert result.stdout.split()[-2:] == ["NO-TORCH", str(exit_code)], result.stderr


def test_every_subcommand_is_listed_in_the_top_level_help(capsys):
    from nas.cli import SUBCOMMAND_MODULES, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMAND_MODULES)


def test_the_chosen_command_is_registered_in_full(capsys):
    from nas.cli import main

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "--arch" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["-5ms", "-5", "-0.5 s"])
def test_a_negative_budget_gets_the_budget_parsers_message(capsys, value):
    from nas.cli import main

    code = main(["search", "--space", "nb201", "--device", "pixel2", "--latency", value])
    assert code == 2
    assert "must be a finite number above zero" in capsys.readouterr().err
