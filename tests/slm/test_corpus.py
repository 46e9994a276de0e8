import hashlib
import lzma
import shutil

import numpy as np
import pytest

from nas.errors import UserInputError
from nas.slm.corpus import DATA_DIR, MANIFEST, SPLITS, build_corpus, load_corpus, split_of


def test_shipped_corpus_has_three_disjoint_splits_of_python_source():
    corpus = load_corpus()
    files = {split: set(corpus.manifest["splits"][split]["files"]) for split in SPLITS}
    assert not files["train"] & files["validation"]
    assert not files["train"] & files["test"]
    assert not files["validation"] & files["test"]
    for split in SPLITS:
        data = corpus.split(split)
        assert data.dtype == np.uint8 and len(data) > 100_000
        text = bytes(data).decode("utf-8")
        assert text.startswith("# file: ")
        assert text.count("# file: ") >= corpus.manifest["splits"][split]["num_files"]
        assert hashlib.sha256(bytes(data)).hexdigest() == corpus.manifest["splits"][split]["text_sha256"]
    assert len(corpus.train) > 5 * len(corpus.validation)
    assert corpus.manifest["licence"].startswith("PSF")
    assert (DATA_DIR / "LICENSE-PSF.txt").is_file() and (DATA_DIR / "PROVENANCE.md").is_file()


def test_unknown_split_is_refused():
    with pytest.raises(UserInputError, match="train, validation, test"):
        load_corpus().split("dev")


def test_a_damaged_split_is_refused(tmp_path):
    copy = tmp_path / "corpus"
    shutil.copytree(DATA_DIR, copy)
    target = copy / "stdlib-py311.test.txt.xz"
    blob = bytearray(target.read_bytes())
    blob[100] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(UserInputError, match="sha256"):
        load_corpus(str(copy))
    with pytest.raises(UserInputError, match="build"):
        load_corpus(str(tmp_path / "nowhere"))


def test_build_splits_by_file_skips_tests_and_is_reproducible(tmp_path):
    lib = tmp_path / "lib"
    for name in [f"mod{i}.py" for i in range(60)] + ["pkg/inner.py", "test/test_x.py", "pkg/tests/t.py",
                                                      "encodings/cp1.py", "_sysconfigdata_x.py"]:
        path = lib / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {name}\nx = {len(name)}\n")
    (lib / "big.py").write_text("y = 1\n" * 20_000)
    first = build_corpus(lib, tmp_path / "a")
    second = build_corpus(lib, tmp_path / "b")
    assert [first["splits"][s]["sha256"] for s in SPLITS] == [second["splits"][s]["sha256"] for s in SPLITS]
    listed = [f for s in SPLITS for f in first["splits"][s]["files"]]
    assert sorted(listed) == sorted([f"mod{i}.py" for i in range(60)] + ["pkg/inner.py"])
    for split in SPLITS:
        assert all(split_of(f) == split for f in first["splits"][split]["files"])
    corpus = load_corpus(str(tmp_path / "a"))
    text = lzma.decompress((tmp_path / "a" / first["splits"]["train"]["file"]).read_bytes())
    assert bytes(corpus.train) == text and b"# file: mod" in text
    assert (tmp_path / "a" / MANIFEST).is_file()
