"""``nas predictor ...`` end to end, through the real CLI entry point."""

import csv
import json

import pytest

from nas import predictors
from nas.cli import main
from nas.search_space import get_space


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_reference_archs_lists_ten_canonical_strings(capsys):
    code, out, _ = _run(capsys, "predictor", "reference-archs", "--space", "nb201")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 10
    assert [get_space("nb201").from_string(s) for s in lines] == predictors.reference_archs("nb201")


def _measurements_file(tmp_path, space="nb201", device="pixel2", drop_first=False):
    from nas.predictors.evaluation import measurement_rows, table_measurements

    rows = table_measurements(space, device, measurement_rows(space))
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arch", "latency_ms"])
        for i, (arch, ms) in enumerate(rows.items()):
            if not (drop_first and i == 0):
                writer.writerow([arch, ms])
    return path, list(rows)


def test_finetune_then_predict_with_interval(tmp_path, capsys):
    path, archs = _measurements_file(tmp_path)
    code, _, _ = _run(capsys, "predictor", "finetune", "--space", "nb201", "--measurements", str(path),
                      "--out", str(tmp_path / "adapted.ckpt"))
    assert code == 0
    (tmp_path / "archs.txt").write_text("\n".join(archs[:3]) + "\n")
    code, _, _ = _run(capsys, "predictor", "predict", "--predictor", str(tmp_path / "adapted.ckpt"),
                      "--archs", str(tmp_path / "archs.txt"), "--out", str(tmp_path / "p.csv"))
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["arch"] for r in rows] == archs[:3]
    for row in rows:
        assert float(row["low_ms"]) <= float(row["latency_ms"]) <= float(row["high_ms"])


def test_finetune_on_a_replayed_device(tmp_path, capsys):
    code, out, _ = _run(capsys, "predictor", "finetune", "--space", "fbnet", "--device", "raspi4",
                        "--out", str(tmp_path / "a.ckpt"))
    assert code == 0 and (tmp_path / "a.ckpt").is_file()


def test_missing_reference_arch_is_exit_2_naming_it(tmp_path, capsys):
    path, archs = _measurements_file(tmp_path, drop_first=True)
    code, _, err = _run(capsys, "predictor", "finetune", "--space", "nb201", "--measurements", str(path),
                        "--out", str(tmp_path / "a.ckpt"))
    assert code == 2 and archs[0] in err


def test_bad_inputs_are_exit_2(tmp_path, capsys):
    (tmp_path / "archs.txt").write_text("nonsense\n")
    code, _, err = _run(capsys, "predictor", "predict", "--predictor", str(tmp_path / "none.ckpt"),
                        "--archs", str(tmp_path / "archs.txt"))
    assert code == 2 and "does not exist" in err
    code, _, _ = _run(capsys, "predictor", "eval", "--space", "nb201", "--seeds", "0")
    assert code == 2


def test_eval_json_of_the_default_predictor(capsys):
    code, out, _ = _run(capsys, "predictor", "eval", "--space", "fbnet", "--json")
    result = json.loads(out)
    assert code == 0 and result["mean_spearman"] > 0.9 and len(result["devices"]) == 3
