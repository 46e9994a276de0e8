import pytest

from nas.errors import UserInputError
from nas.predictors import reference_archs
from nas.predictors.measurements import read_measurements_csv
from nas.search_space import get_space


def _write(tmp_path, rows, space="nb201"):
    search_space = get_space(space)
    lines = ["arch,latency_ms"] + [f'"{search_space.to_string(a)}",{v}' if not isinstance(a, str) else f"{a},{v}"
                                   for a, v in rows]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("space", ["nb201", "fbnet"])
def test_reads_reference_measurements_and_extra_rows(tmp_path, space):
    refs = reference_archs(space)
    assert len(refs) == 10 and len(set(refs)) == 10
    extra = get_space(space).default_arch()
    path = _write(tmp_path, [(a, 1.5 + i) for i, a in enumerate(refs)] + [(extra, 3.0)], space)
    measured = read_measurements_csv(path, space)
    assert len(measured) == 11
    assert measured[get_space(space).to_string(refs[0])] == 1.5


def test_missing_reference_arch_is_named(tmp_path):
    refs = reference_archs("nb201")
    path = _write(tmp_path, [(a, 2.0) for a in refs[1:]])
    with pytest.raises(UserInputError, match="missing") as info:
        read_measurements_csv(path, "nb201")
    assert get_space("nb201").to_string(refs[0]) in str(info.value)


@pytest.mark.parametrize("bad, line, message", [
    ("-1.0", 4, "positive"), ("abc", 4, "not a number"), ("dup", 4, "duplicate")])
def test_bad_rows_name_their_line(tmp_path, bad, line, message):
    refs = reference_archs("nb201")
    rows = [(a, 2.0) for a in refs]
    if bad == "dup":
        rows.insert(2, (refs[0], 2.0))
    else:
        rows[2] = (refs[2], bad)
    path = _write(tmp_path, rows)
    with pytest.raises(UserInputError, match=f"line {line}.*{message}"):
        read_measurements_csv(path, "nb201")


def test_unparsable_arch_and_header(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("arch,latency_ms\nnot-an-arch,1.0\n")
    with pytest.raises(UserInputError, match="line 2"):
        read_measurements_csv(path, "nb201")
    path.write_text("architecture,ms\n")
    with pytest.raises(UserInputError, match="header"):
        read_measurements_csv(path, "nb201")


def test_the_csv_nas_profile_writes_can_be_read_back(tmp_path):
    from nas.profilers import make_profiler
    from nas.store import write_csv

    refs = reference_archs("nb201")
    records = make_profiler("pixel2").measure("nb201", refs)
    path = tmp_path / "profiled.csv"
    write_csv(path, records)
    assert path.read_text().splitlines()[0].startswith("arch,latency_ms,")
    measured = read_measurements_csv(path, "nb201")
    assert [measured[r.arch] for r in records] == [r.latency_ms for r in records]
    path.write_text("arch,latency_ms,spread_ms\n" + get_space("nb201").to_string(refs[0]) + ",2.0\n")
    with pytest.raises(UserInputError, match="line 2: expected 3 columns"):
        read_measurements_csv(path, "nb201")


def test_a_byte_order_mark_as_excel_writes_it_is_accepted(tmp_path):
    refs = reference_archs("nb201")
    path = _write(tmp_path, [(a, 1.0 + i) for i, a in enumerate(refs)])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert len(read_measurements_csv(path, "nb201")) == 10
