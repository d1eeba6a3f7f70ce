"""Evaluation data: file formats, splits, the Tmall files when present."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.evaluation import datasets as d


def test_read_files(tmp_path) -> None:
    (tmp_path / "s.txt").write_text("1 2 3\n\n4 5\n")
    (tmp_path / "t.tsv").write_text("1 2\t3\n4\t5\n")
    assert d.read_sessions(tmp_path / "s.txt") == [["1", "2", "3"], ["4", "5"]]
    assert d.read_prefix_next(tmp_path / "t.tsv") == [d.Case(("1", "2"), "3"), d.Case(("4",), "5")]
    (tmp_path / "bad.tsv").write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:1"):
        d.read_prefix_next(tmp_path / "bad.tsv")


def test_split_keeps_order_and_known_targets() -> None:
    sessions = [["a", "b"], ["b", "c"], ["a", "b", "z"], ["c", "a"]]
    ds = d.split_sessions(sessions, test_fraction=0.5)
    assert ds.train == [["a", "b"], ["b", "c"]]
    assert d.Case(("a",), "b") in ds.test
    assert all(c.next != "z" for c in ds.test)  # z never occurs in training
    assert d.Case(("c",), "a") in ds.test


def test_index_items_reverses_prefixes() -> None:
    ds = d.Dataset("x", [["a", "b"], ["b", "c"]], [d.Case(("a", "q", "c"), "b")])
    ids, train, test = d.index_items(ds)
    assert ids == {"a": 0, "b": 1, "c": 2}
    np.testing.assert_array_equal(train[1], [1, 2])
    prefix, target = test[0]
    np.testing.assert_array_equal(prefix, [2, -1, 0])  # newest first, unknown -> -1
    assert target == 1


def test_limited_is_seeded() -> None:
    ds = d.Dataset("x", [], [d.Case((str(i),), str(i + 1)) for i in range(100)])
    a, b = ds.limited(10), ds.limited(10)
    assert a.test == b.test and len(a.test) == 10
    assert ds.limited(0) is ds


@pytest.mark.data
def test_tmall_files_match_the_readme() -> None:
    root = d.shared_data_dir()
    if not (root / d.TMALL_TRAIN).exists():
        pytest.skip(f"Tmall data not found under {root} (set VITRINE_SHARED_DATA)")
    ds = d.load_tmall()
    assert len(ds.train) == 65_286
    assert sum(len(s) for s in ds.train) == 416_554
    assert len(ds.test) == 25_898
