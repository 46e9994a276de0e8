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


HEAVY_PROBE = """
import sys
from nas.cli import main
try:
    code = main({argv!r})
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime", "optuna") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), code)
"""


def _run_probe(argv, cache):
    import os

    env = dict(os.environ, NAS_CACHE=str(cache))
    result = subprocess.run([sys.executable, "-c", HEAVY_PROBE.format(argv=argv)], capture_output=True, text=True,
                            env=env)
    heavy, code = result.stdout.split()[-2:]
    return heavy, int(code), result.stderr


@pytest.fixture(scope="module")
def described_parsers(tmp_path_factory):
    """Every subcommand's parser described into a fresh cache, as its first run would leave it."""
    from nas.cli import SUBCOMMAND_MODULES, _subcommand_parser, build_parser, parser_cache

    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("NAS_CACHE", str(cache))
    try:
        def describe_all():
            for name in SUBCOMMAND_MODULES:
                parser_cache.save(name, _subcommand_parser(build_parser([name]), name))
            return parser_cache.fingerprint()

        yield cache, describe_all
    finally:
        mp.undo()


@pytest.mark.parametrize("argv, exit_code, message", [
    (["search", "--help"], 0, ""),
    (["search", "--device", "x", "--latency", "abc"], 2, "latency budget 'abc' is not a number"),
    (["search", "--bogus"], 2, "the following arguments are required: --device, --latency"),
    (["search", "--device", "x", "--latency", "1ms", "--bogus"], 2, "unrecognized arguments: --bogus"),
    (["search", "--space", "nowhere", "--device", "x", "--latency", "1ms"], 2, "invalid choice: 'nowhere'"),
    (["search", "--device", "x", "--latency", "1ms", "--evaluations", "many"], 2, "invalid int value: 'many'"),
    (["profile"], 2, "the following arguments are required: --device, --space"),
    (["profile", "--device", "x", "--space", "nb201", "--num", "0"], 2, "--num must be at least 1"),
    (["predictor", "meta-train"], 2, "the following arguments are required: --space"),
    (["predictor", "finetune", "--space", "nb201", "--out", "o"], 2, "one of the arguments --measurements"),
    (["quantize", "--help"], 0, ""),
    (["export", "--help"], 0, ""),
    (["devices", "add", "mine"], 2, "the following arguments are required: --profiler"),
    (["agent", "serve", "--port", "x"], 2, "invalid int value: 'x'"),
])
def test_subcommand_help_and_argument_errors_do_not_import_heavy_libraries(described_parsers, argv, exit_code,
                                                                             message):
    cache, describe_all = described_parsers
    from nas.cli import parser_cache

    for _ in range(3):  # a file of the package changed meanwhile makes the descriptions stale: describe again
        before = parser_cache.fingerprint() if parser_cache.load(argv[0]) is not None else describe_all()
        heavy, code, err = _run_probe(argv, cache)
        if parser_cache.fingerprint() == before:
            break
    assert (heavy, code) == ("HEAVY=", exit_code), err
    assert message in err


def test_a_rebuilt_parser_prints_the_same_help_as_the_real_one():
    from nas.cli import SUBCOMMAND_MODULES, _subcommand_parser, build_parser, parser_cache

    def helps(parser, prefix=""):
        found = {prefix: parser.format_help()}
        for action in parser._actions:
            if isinstance(action, __import__("argparse")._SubParsersAction):
                for name, sub in action.choices.items():
                    found.update(helps(sub, f"{prefix} {name}"))
        return found

    for name in SUBCOMMAND_MODULES:
        real = _subcommand_parser(build_parser([name]), name)
        rebuilt = _subcommand_parser(build_parser([name], parser_cache.describe(real)), name)
        assert helps(rebuilt) == helps(real), name


def test_a_description_of_other_code_is_not_used(tmp_path, monkeypatch):
    import json

    from nas.cli import _subcommand_parser, build_parser, parser_cache

    monkeypatch.setenv("NAS_CACHE", str(tmp_path))
    parser_cache.save("export", _subcommand_parser(build_parser(["export"]), "export"))
    assert parser_cache.load("export") is not None
    path = tmp_path / "cli-parsers" / "export.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(dict(record, fingerprint="of another version")))
    assert parser_cache.load("export") == parser_cache.shipped("export")  # the package's own, if current
    path.write_text("{ half a file")
    assert parser_cache.load("export") == parser_cache.shipped("export")
    monkeypatch.setattr(parser_cache, "SHIPPED", tmp_path / "nothing shipped")
    assert parser_cache.load("export") is None


def test_the_shipped_descriptions_are_those_of_these_sources():
    from nas.cli import SUBCOMMAND_MODULES, _subcommand_parser, build_parser, parser_cache

    parser = build_parser()
    for name in SUBCOMMAND_MODULES:
        assert parser_cache.shipped(name) == parser_cache.describe(_subcommand_parser(parser, name)), (
            f"nas/cli/parsers/{name}.json is not the description of this code's parser: "
            f"run python -m nas.cli.write_parsers")


def test_a_fresh_install_answers_argument_errors_from_the_shipped_descriptions(tmp_path):
    heavy, code, err = _run_probe(["search", "--device", "x", "--latency", "-3ms"], tmp_path)
    assert (heavy, code) == ("HEAVY=", 2), err
    assert "must be a finite number above zero" in err
    heavy, code, err = _run_probe(["profile", "--help"], tmp_path)
    assert (heavy, code) == ("HEAVY=", 0), err


def test_the_first_run_of_a_subcommand_describes_it_for_the_next(tmp_path, monkeypatch):
    """Sources changed since the shipped descriptions were written: the first run imports the
    registries and describes its parser into the cache, the next one answers from it."""
    import os

    from nas.cli import parser_cache

    probe = ("import sys; from pathlib import Path; from nas.cli import parser_cache; "
             "parser_cache.SHIPPED = Path(sys.argv[1]); from nas.cli import main; "
             "code = main(['search', '--device', 'x', '--latency', '-3ms']); "
             "print('HEAVY=' + ','.join(m for m in ('torch', 'optuna') if m in sys.modules), code)")
    env = dict(os.environ, NAS_CACHE=str(tmp_path))
    outputs = []
    for _ in range(2):
        for _ in range(3):  # a file of the package changed meanwhile: its description is written again
            before = parser_cache.fingerprint()
            result = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "none shipped")],
                                    capture_output=True, text=True, env=env)
            if parser_cache.fingerprint() == before:
                break
        outputs.append(result.stdout.split()[-2:])
        assert "must be a finite number above zero" in result.stderr
    assert outputs[0][0].startswith("HEAVY=torch") and outputs[0][1] == "2"
    assert (tmp_path / "cli-parsers" / "search.json").exists()
    assert outputs[1] == ["HEAVY=", "2"]
