"""Architecture files as users write them."""

from nas.search_space import get_space, read_arch_file


def test_arch_file_with_byte_order_mark_and_comments(tmp_path):
    space = get_space("nb201")
    archs = [space.from_index(i) for i in (0, 7, 42)]
    path = tmp_path / "archs.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["# mine", *map(space.to_string, archs)]).encode())
    assert read_arch_file(path, "nb201") == archs


def test_arch_csv_with_byte_order_mark(tmp_path):
    space = get_space("nb201")
    path = tmp_path / "archs.csv"
    path.write_bytes(b"\xef\xbb\xbfarch,latency_ms\r\n" + f"{space.to_string(space.from_index(3))},1.0\r\n".encode())
    assert read_arch_file(path, "nb201") == [space.from_index(3)]
