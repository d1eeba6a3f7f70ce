"""scoring.rules.wire on hand-encoded protobuf bytes: every op, proto3 defaults and last-wins,
what a reader must skip (unknown fields, groups), malformed input, and the builder's checks."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.rules import VT, Access, compile_program, ir
from scoring.rules.wire import Read, WireProgram, build_layout, fnv1a
from scoring.units import DAY_MS

TODAY = 20_000
NOW = TODAY * DAY_MS + 1_000


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative numbers as protobuf writes them: ten bytes
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vi(field: int, n: int) -> bytes:
    return varint(field << 3) + varint(n)


def f64(field: int, x: float) -> bytes:
    return varint(field << 3 | 1) + struct.pack("<d", x)


def ld(field: int, data: bytes | str) -> bytes:
    data = data.encode() if isinstance(data, str) else data
    return varint(field << 3 | 2) + varint(len(data)) + data


def entry(key: str, value: bytes) -> bytes:
    return ld(1, key) + value


def program_for(kinds: list[VT], symbols: tuple[str, ...] = (), compare_strings: bool = False):  # type: ignore[no-untyped-def]
    """A program whose features are len(kinds) slots of those types (numbers first), with the
    given string constants in its symbol table; its single output is always true."""
    accesses = [Access("field", f"f{i}", None, t) for i, t in enumerate(kinds)]
    exprs: list[ir.Expr] = [ir.Const(VT.BOOL, True)]
    exprs += [ir.Compare(VT.BOOL, "==", ir.Leaf(VT.STRING, a), ir.Const(VT.STRING, s))
              for a in accesses if a.type is VT.STRING for s in symbols]
    if compare_strings:
        strings = [a for a in accesses if a.type is VT.STRING]
        exprs.append(ir.Compare(VT.BOOL, "==", ir.Leaf(VT.STRING, strings[0]), ir.Leaf(VT.STRING, strings[1])))
    return compile_program(exprs, accesses)


def read(reads: list[Read], message: bytes, kinds: list[VT] | None = None, **kwargs: object) -> list[float] | None:
    kinds = kinds or [VT.NUMBER] * len(reads)
    wire = WireProgram(program_for(kinds, **kwargs), reads)  # type: ignore[arg-type]
    features = wire.read(message, NOW)
    return None if features is None else features.tolist()


def test_scalars_with_proto3_defaults_and_last_occurrence_winning() -> None:
    reads = [Read((1,), "varint"), Read((2,), "double"), Read((3,), "bool"), Read((4,), "varint"),
             Read((9,), "varint")]
    message = vi(1, 5) + f64(2, 2.5) + vi(3, 1) + vi(4, -7) + vi(1, 6)
    assert read(reads, message) == [6.0, 2.5, 1.0, -7.0, 0.0]
    assert read(reads, b"") == [0.0] * 5


def test_nested_messages_at_any_depth() -> None:
    reads = [Read((5, 2), "varint"), Read((5, 6, 1), "double"), Read((5, 6, 2), "varint"), Read((7,), "varint")]
    inner = ld(6, f64(1, 1.5)) + ld(6, vi(2, 4))  # a sub-message split in two: both halves count
    assert read(reads, vi(7, 1) + ld(5, vi(2, 3) + inner)) == [3.0, 1.5, 4.0, 1.0]
    assert read(reads, ld(5, b"")) == [0.0] * 4


def test_lists_count_index_and_contains() -> None:
    reads = [Read((8,), "count"), Read((8,), "contains", key="b"), Read((8,), "contains", key="zz"),
             Read((8,), "contains", key=""), Read((8,), "index", args=(1,)), Read((8,), "index", args=(7,))]
    kinds = [VT.NUMBER] * 4 + [VT.STRING] * 2
    message = ld(8, "a") + ld(8, "b") + ld(8, "") + vi(1, 3)
    assert read(reads, message, kinds, symbols=("b",)) == [3.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_maps_lookup_presence_and_strings() -> None:
    reads = [Read((9,), "map_double", key="run"), Read((9,), "map_double", key="yoga"),
             Read((9,), "map_has", key="yoga"),
             Read((9,), "map_has", key="golf"), Read((9,), "count"), Read((10,), "map_varint", key="n"),
             Read((11,), "map_string", key="tier"), Read((11,), "map_string", key="none")]
    kinds = [VT.NUMBER] * 6 + [VT.STRING] * 2
    message = (ld(9, entry("run", f64(2, 0.5))) + ld(9, entry("yoga", b"")) + ld(10, entry("n", vi(2, 12)))
               + ld(11, entry("tier", ld(2, "gold"))) + ld(9, entry("run", f64(2, 0.75))))  # last entry wins
    assert read(reads, message, kinds, symbols=("gold",)) == [0.75, 0.0, 1.0, 0.0, 3.0, 12.0, 1.0, 0.0]


def test_many_reads_of_one_key() -> None:
    """Several reads wanting the same key sit behind one hash-table entry: all of them apply."""
    reads = [Read((9,), "map_has", key="k"), Read((9,), "map_double", key="k"), Read((9,), "map_has", key="k")]
    assert read(reads, ld(9, entry("k", f64(2, 3.0)))) == [1.0, 3.0, 1.0]


def test_elements_of_repeated_messages() -> None:
    item = lambda pid, qty, price: ld(16, ld(1, pid) + vi(2, qty) + f64(3, price))  # noqa: E731
    reads = [Read((16,), "sum_quantity", args=(2,)), Read((16,), "sum_price_quantity", args=(2, 3)),
             Read((16,), "element_contains", key="p2", args=(1,)), Read((16,), "count"),
             Read((16,), "element_index", args=(1, 1)), Read((16,), "element_index", args=(5, 1))]
    kinds = [VT.NUMBER] * 4 + [VT.STRING] * 2
    message = item("p1", 2, 10.0) + item("p2", 0, 4.0) + item("p3", -3, 1.0)  # quantity <= 0 counts 1
    assert read(reads, message, kinds, symbols=("p2",)) == [4.0, 20.0 + 4.0 + 1.0, 1.0, 3.0, 1.0, 0.0]


@settings(max_examples=150, deadline=None)
@given(counters=st.lists(st.tuples(st.integers(TODAY - 60, TODAY + 2), st.integers(0, 5), st.integers(0, 9)),
                         max_size=40),
       windows=st.lists(st.tuples(st.integers(0, 6), st.integers(1, 60)), min_size=1, max_size=10))
def test_windows_sum_counters_by_type_and_day(counters: list[tuple[int, int, int]],
                                              windows: list[tuple[int, int]]) -> None:
    message = b"".join(ld(24, vi(1, day) + vi(2, kind) + vi(3, count)) for day, kind, count in counters)
    reads = [Read((24,), "window", args=(1, 2, 3, kind, days)) for kind, days in windows]
    expected = [float(sum(count for day, kind, count in counters if kind == wanted and TODAY - days < day <= TODAY))
                for wanted, days in windows]
    assert read(reads, message) == expected


def test_strings_become_symbol_codes() -> None:
    reads = [Read((1,), "string"), Read((2,), "string"), Read((3,), "string"), Read((4,), "string")]
    kinds = [VT.STRING] * 4
    program = program_for(kinds, symbols=("FR", "mobile"))
    got = WireProgram(program, reads).read(ld(1, "mobile") + ld(2, "DE") + ld(4, "FR"), NOW)
    assert got is not None
    assert got.tolist() == [program.symbols["mobile"], -1, 0, program.symbols["FR"]]


def test_unknown_strings_are_numbered_when_fields_are_compared() -> None:
    """As Program.encode: -1, -2, ... per distinct unknown value, so equal unknowns stay equal."""
    reads = [Read((1,), "string"), Read((2,), "string"), Read((3,), "string"), Read((4,), "string")]
    kinds = [VT.STRING] * 4
    program = program_for(kinds, symbols=("x",), compare_strings=True)
    assert program.compare_strings
    wire = WireProgram(program, reads)
    features = wire.read(ld(1, "a") + ld(2, "b") + ld(3, "a") + ld(4, "x"), NOW)
    assert features is not None
    expected = [-1, -2, -1, program.symbols["x"]]
    assert features.tolist() == program.features([], ["a", "b", "a", "x"]).tolist() == expected


def test_unknown_fields_and_groups_are_skipped() -> None:
    reads = [Read((1,), "varint"), Read((3,), "double")]
    group = varint(50 << 3 | 3) + vi(1, 9) + varint(51 << 3 | 3) + varint(51 << 3 | 4) + varint(50 << 3 | 4)
    fixed32 = varint(60 << 3 | 5) + b"\x00\x00\x80\x3f"
    message = vi(1, 4) + group + fixed32 + ld(70, b"\xff\xff") + vi(5000, 1) + f64(3, 2.0)
    assert read(reads, message) == [4.0, 2.0]


@pytest.mark.parametrize("message", [
    b"\x08",                      # a tag without its value
    vi(1, 1)[:-1] + b"\x80",      # a varint running off the end
    ld(8, "abc")[:-1],            # a length beyond the end
    b"\x0f",                      # wire type 7 does not exist
    varint(50 << 3 | 3) + vi(1, 1),  # a group that never ends
    f64(1, 1.0),                  # field 1 is read as a varint: a fixed64 there is not this schema
    vi(9, 1),                     # a map field as a varint
    ld(5, vi(2, 1)[:-1]),         # a sub-message cut short
])
def test_malformed_or_unexpected_bytes_give_none(message: bytes) -> None:
    reads = [Read((1,), "varint"), Read((5, 2), "varint"), Read((8,), "count"), Read((9,), "map_has", key="k")]
    assert read(reads, message) is None
    program = program_for([VT.NUMBER] * len(reads))
    assert WireProgram(program, reads).matching(message, NOW) is None


def test_matching_runs_the_program_on_what_was_read() -> None:
    visits = Access("field", "visit_count", None, VT.NUMBER)
    country = Access("field", "country", None, VT.STRING)
    rules = [ir.Compare(VT.BOOL, ">=", ir.Leaf(VT.NUMBER, visits), ir.Const(VT.NUMBER, 2.0)),
             ir.Compare(VT.BOOL, "==", ir.Leaf(VT.STRING, country), ir.Const(VT.STRING, "FR")),
             ir.Compare(VT.BOOL, "<", ir.Leaf(VT.NUMBER, visits), ir.Const(VT.NUMBER, 2.0))]
    program = compile_program(rules, [visits, country])
    wire = WireProgram(program, [Read((6,), "varint"), Read((2, 6), "string")])
    message = vi(6, 3) + ld(2, ld(6, "FR"))
    hits = wire.matching(message, NOW)
    features = wire.read(message, NOW)
    assert hits is not None and features is not None
    assert hits.tolist() == program.matching(features, NOW).tolist() == [0, 1]
    assert wire.matching(b"", NOW).tolist() == [2]  # type: ignore[union-attr]


def test_a_program_without_reads_ignores_the_message() -> None:
    program = compile_program([ir.Const(VT.BOOL, True)])
    assert WireProgram(program, []).matching(b"\xff\xff", NOW).tolist() == [0]  # type: ignore[union-attr]


@pytest.mark.parametrize(("reads", "numbers", "message"), [
    ([Read((1,), "nope")], 1, "unknown op"),
    ([Read((1,), "index")], 0, "takes 1 args"),
    ([Read((1,), "string")], 1, "yields a string"),
    ([Read((1,), "varint")], 0, "yields a number"),
    ([Read((), "varint")], 1, "path"),
    ([Read((0,), "varint")], 1, "path"),
    ([Read((1,) * 10, "varint")], 1, "path"),
    ([Read((1,), "element_contains", key="k", args=(16,))], 1, "element fields"),
    ([Read((1,), "window", args=(1, 2, 3, 1, 0))], 1, "out of range"),
    ([Read((1,), "index", args=(-1,))], 0, "out of range"),
])
def test_builder_refuses_bad_reads(reads: list[Read], numbers: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_layout(reads, numbers, {"": 0}, False, DAY_MS)  # raises before returning


def test_reads_must_cover_every_slot() -> None:
    with pytest.raises(ValueError, match="one per feature slot"):
        WireProgram(program_for([VT.NUMBER, VT.NUMBER]), [Read((1,), "varint")])


def test_hash_matches_the_kernel_on_colliding_buckets() -> None:
    """Many keys in a small table: every one is still found (open addressing, probe to an empty slot)."""
    keys = [f"k{i}" for i in range(40)]
    reads = [Read((9,), "map_has", key=k) for k in keys]
    message = b"".join(ld(9, entry(k, b"")) for k in keys[::2])
    assert read(reads, message) == [1.0 if i % 2 == 0 else 0.0 for i in range(40)]
    assert fnv1a(b"") == -3750763034362895579  # the FNV-1a offset basis, as a signed int64
    assert np.int64(fnv1a(b"a")) == fnv1a(b"a")


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(-3, 9), st.sampled_from(["", "a", "FR", "zz"]),
                               st.lists(st.sampled_from(["p1", "p2", "q"]), max_size=3)), max_size=12))
def test_many_messages_read_as_each_alone(rows: list[tuple[int, str, list[str]]]) -> None:
    """read_many: one column per slot over many messages, each of the type at `root` of the reads
    (here the sub-message in field 1), as read() gives for that message inside its envelope."""
    reads = [Read((1, 6), "varint"), Read((1, 8), "contains", key="p2"), Read((1, 8), "count"),
             Read((2, 1), "varint"), Read((1, 2), "string")]
    kinds = [VT.NUMBER] * 4 + [VT.STRING]
    wire = WireProgram(program_for(kinds, symbols=("FR",)), reads)
    messages = [vi(6, n) + ld(2, country) + b"".join(ld(8, p) for p in viewed) for n, country, viewed in rows]
    columns, read = wire.read_many(messages, NOW, root=(1,))
    assert columns.shape == (len(reads), len(rows)) and read.all()
    for i, message in enumerate(messages):
        alone = wire.read(ld(1, message), NOW)
        assert alone is not None and columns[:, i].tolist() == alone.tolist()


def test_many_messages_flag_the_malformed_ones_and_keep_defaults_outside_the_root() -> None:
    reads = [Read((1, 6), "varint"), Read((2, 1), "varint")]
    wire = WireProgram(program_for([VT.NUMBER, VT.NUMBER]), reads)
    columns, read = wire.read_many([vi(6, 4), b"\x08", vi(6, 5)], NOW, root=(1,))
    assert read.tolist() == [True, False, True]
    assert columns.tolist() == [[4.0, 0.0, 5.0], [0.0, 0.0, 0.0]]
    only_outside = WireProgram(program_for([VT.NUMBER]), [Read((2, 1), "varint")])
    columns, read = only_outside.read_many([vi(1, 7), b"\xff"], NOW, root=(1,))  # nothing read inside field 1
    assert columns.tolist() == [[0.0, 0.0]] and read.all()
    assert wire.read_many([], NOW, root=(1,))[0].shape == (2, 0)


# Every op, over a message that exercises all of them: the fuzz tests below mutate it.
FUZZ_READS = [Read((1, 6), "varint"), Read((1, 2), "double"), Read((1, 3), "bool"), Read((1, 8), "count"),
              Read((1, 8), "contains", key="p2"), Read((1, 9), "map_double", key="run"),
              Read((1, 9), "map_has", key="yoga"), Read((1, 10), "map_varint", key="n"),
              Read((1, 16), "sum_quantity", args=(2,)), Read((1, 16), "sum_price_quantity", args=(2, 3)),
              Read((1, 16), "element_contains", key="p1", args=(1,)),
              Read((1, 24), "window", args=(1, 2, 3, 2, 30)), Read((2, 13, 3), "varint"),
              Read((1, 8), "index", args=(1,)), Read((1, 11), "map_string", key="tier"),
              Read((1, 16), "element_index", args=(0, 1)), Read((2, 1), "string")]
FUZZ_KINDS = [VT.NUMBER] * 13 + [VT.STRING] * 4
FUZZ_WIRE = WireProgram(program_for(FUZZ_KINDS, symbols=("p2", "gold"), compare_strings=True), FUZZ_READS)
FUZZ_MESSAGE = ld(1, vi(6, 3) + f64(2, 1.5) + vi(3, 1) + ld(8, "p1") + ld(8, "p2") + ld(9, entry("run", f64(2, 2.0)))
                  + ld(9, entry("yoga", b"")) + ld(10, entry("n", vi(2, 4))) + ld(11, entry("tier", ld(2, "gold")))
                  + ld(16, ld(1, "p1") + vi(2, 2) + f64(3, 9.5)) + ld(24, vi(1, TODAY) + vi(2, 2) + vi(3, 5))
                  ) + ld(2, ld(1, "mobile") + ld(13, vi(3, 7)))


def _read_every_way(message: bytes) -> None:
    features = FUZZ_WIRE.read(message, NOW)
    hits = FUZZ_WIRE.matching(message, NOW)
    assert (features is None) == (hits is None)
    columns, read = FUZZ_WIRE.read_many([message, message[1:], message], NOW, root=(1,))
    assert columns.shape == (len(FUZZ_READS), 3) and read.shape == (3,)


def test_the_fuzz_message_reads_every_op() -> None:
    features = FUZZ_WIRE.read(FUZZ_MESSAGE, NOW)
    assert features is not None
    assert features[:13].tolist() == [3.0, 1.5, 1.0, 2.0, 1.0, 2.0, 1.0, 4.0, 2.0, 19.0, 1.0, 5.0, 7.0]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_kernels(data: bytes) -> None:
    """The kernels do no bounds checking of their own: every read must stay inside the message,
    whatever the bytes (a corrupt stored profile reaches read_many through ScanProfiles)."""
    _read_every_way(data)
    _read_every_way(ld(1, data))


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.tuples(st.integers(0, len(FUZZ_MESSAGE) - 1), st.integers(0, 255)), min_size=1, max_size=6),
       end=st.integers(0, len(FUZZ_MESSAGE)))
def test_damaged_messages_never_crash_the_kernels(cuts: list[tuple[int, int]], end: int) -> None:
    damaged = bytearray(FUZZ_MESSAGE)
    for at, value in cuts:
        damaged[at] = value
    _read_every_way(bytes(damaged))
    _read_every_way(bytes(damaged[:end]))


@pytest.mark.slow
def test_fuzzed_kernels_stay_in_bounds_with_numba_bounds_checking(tmp_path: Path) -> None:
    """Compiled normally, an out-of-bounds read goes unnoticed; with NUMBA_BOUNDSCHECK=1 it raises
    IndexError. Run the fuzz tests again that way, in a child process with its own kernel cache."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "never_crash"],
        env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
