"""The pool state's verdicts against a plain model of the rule: per key, the current
(version, observed-at, fingerprint); the same content is a duplicate, an older version (or
the same one observed earlier) stale, the same version and time with other content a
conflict, anything newer an update. Every test runs on both implementations: the C table
and the pure Python dict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.pool_state import (
    NATIVE,
    STATE_HEADER,
    NativePoolState,
    PoolState,
    PurePoolState,
    StateTable,
    Verdict,
    current_of,
    pack_state,
    unpack_state,
)

#: both implementations; the C one is built by the install (``pip install -e .``)
IMPLEMENTATIONS: list[type[StateTable]] = [PurePoolState, NativePoolState]


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda c: c.__name__)
def impl(request: pytest.FixtureRequest) -> type[StateTable]:
    cls: type[StateTable] = request.param
    return cls


def test_the_c_table_was_built_and_is_the_one_in_use() -> None:
    # A silent fallback would cost 2.3 times the memory a key: the install must build it.
    assert NATIVE and PoolState is NativePoolState


FP = [bytes([i]) * 8 for i in range(4)]
_MAX = 2**63 - 1


def model_verdict(
    cur: tuple[int, int, bytes] | None, version: int, observed: int, fp: bytes
) -> Verdict:
    if cur is None:
        return Verdict.UPDATE
    cv, co, cfp = cur
    if cfp == fp:
        return Verdict.DUPLICATE
    if (version, observed) < (cv, co):
        return Verdict.STALE
    if (version, observed) == (cv, co):
        return Verdict.VERSION_CONFLICT
    return Verdict.UPDATE


numbers = st.one_of(st.integers(0, 3), st.sampled_from([2**31, 2**32 + 1, 2**62, _MAX]))
arrivals = st.lists(
    st.tuples(
        st.integers(0, 2),  # partition
        st.sampled_from([b"r|a", b"r|b", b"r|c"]),  # key
        numbers,  # version
        numbers,  # observed-at
        st.sampled_from(FP),
    ),
    max_size=60,
)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__name__)
@settings(max_examples=400, deadline=None)
@given(seq=arrivals)
def test_verdicts_follow_the_rule_for_any_order_of_arrival(
    impl: type[StateTable], seq: list[tuple[int, bytes, int, int, bytes]]
) -> None:
    state = impl()
    model: dict[tuple[int, bytes], tuple[int, int, bytes]] = {}
    for partition, key, version, observed, fp in seq:
        cur = model.get((partition, key))
        verdict, previous = state.decide(partition, key, pack_state(version, observed, fp))
        assert verdict is model_verdict(cur, version, observed, fp)
        # what it was compared with is the model's current version
        assert current_of(previous) == ((cur[0], cur[1]) if cur else (-1, -1))
        if verdict is Verdict.UPDATE:
            model[(partition, key)] = (version, observed, fp)
    assert len(state) == len(model)


def test_undo_puts_back_what_an_update_replaced(impl: type[StateTable]) -> None:
    state = impl()
    first = pack_state(1, 10, FP[0])
    state.decide(0, b"k", first)
    verdict, previous = state.decide(0, b"k", pack_state(2, 10, FP[1]))
    assert verdict is Verdict.UPDATE and current_of(previous) == (1, 10)
    state.undo(0, b"k", previous)
    assert state.decide(0, b"k", pack_state(1, 10, FP[0]))[0] is Verdict.DUPLICATE
    verdict, previous = state.decide(0, b"new", pack_state(1, 1, FP[0]))
    state.undo(0, b"new", previous)
    assert len(state) == 1


def test_restore_takes_the_latest_header_of_each_key_and_replaces_the_partition(
    impl: type[StateTable],
) -> None:
    state = impl()
    state.decide(1, b"gone", pack_state(9, 9, FP[3]))
    held = state.restore(
        1,
        [
            (b"a", pack_state(1, 5, FP[0])),
            (b"b", pack_state(1, 5, FP[1])),
            (b"a", pack_state(2, 6, FP[2])),  # compaction keeps the last
        ],
    )
    assert held == 2 and len(state) == 2
    assert state.decide(1, b"a", pack_state(2, 6, FP[2]))[0] is Verdict.DUPLICATE
    assert state.decide(1, b"a", pack_state(1, 99, FP[3]))[0] is Verdict.STALE
    assert state.decide(1, b"gone", pack_state(0, 0, FP[3]))[0] is Verdict.UPDATE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00" * 23,
        b"\x00" * 25,
        b"\x80" + b"\x00" * 23,  # a negative version
        b"\x00" * 8 + b"\xff" + b"\x00" * 15,  # a negative time
    ],
)
def test_restore_refuses_a_header_that_is_not_a_state(impl: type[StateTable], raw: bytes) -> None:
    state = impl()
    state.decide(0, b"kept", pack_state(1, 1, FP[0]))
    with pytest.raises(ValueError, match=STATE_HEADER):
        state.restore(0, [(b"a", pack_state(1, 1, FP[1])), (b"k", raw)])
    # the partition's state is as it was: a refused restore replaces nothing
    assert len(state) == 1
    assert state.decide(0, b"kept", pack_state(1, 1, FP[0]))[0] is Verdict.DUPLICATE


@pytest.mark.parametrize(
    ("version", "observed", "fp"),
    [(-1, 0, FP[0]), (0, -1, FP[0]), (0, 0, b"short"), (2**63, 0, FP[0])],
)
def test_pack_state_refuses_what_would_not_order_as_bytes(
    version: int, observed: int, fp: bytes
) -> None:
    with pytest.raises(ValueError, match="non-negative"):
        pack_state(version, observed, fp)


def test_the_header_keeps_its_wire_format() -> None:
    # Pool topics already written carry ">qqQ": version, observed-at, fingerprint.
    raw = pack_state(7, 1_790_000_000_000, bytes(range(8)))
    assert raw == (7).to_bytes(8, "big") + (1_790_000_000_000).to_bytes(8, "big") + bytes(range(8))
    assert unpack_state(raw) == (7, 1_790_000_000_000, int.from_bytes(bytes(range(8)), "big"))


# -- the two implementations against each other, at sizes where the C table grows, probes
# -- past its neighbours and closes the gaps an undo leaves

ops = st.lists(
    st.tuples(
        st.sampled_from(["decide", "decide", "decide", "undo", "drop", "restore"]),
        st.integers(-1, 2),  # partition (-1: a record decided outside a worker)
        st.integers(0, 300),  # key
        st.integers(0, 3),  # version
        st.sampled_from(FP),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_the_c_table_decides_as_the_pure_state_does(
    seq: list[tuple[str, int, int, int, bytes]],
) -> None:
    pure, native = PurePoolState(), NativePoolState()
    undo: list[tuple[int, bytes, bytes | None]] = []
    for op, partition, k, version, fp in seq:
        key = b"r|%d" % k
        state = pack_state(version, version, fp)
        if op == "decide":
            got = native.decide(partition, key, state)
            assert got == pure.decide(partition, key, state)
            undo.append((partition, key, got[1]))
        elif op == "undo" and undo:
            partition, key, previous = undo.pop()
            native.undo(partition, key, previous)
            pure.undo(partition, key, previous)
        elif op == "drop":
            native.drop([partition])
            pure.drop([partition])
        elif op == "restore":
            pairs = [(b"r|%d" % i, pack_state(i % 4, i, fp)) for i in range(k)]
            assert native.restore(partition, pairs) == pure.restore(partition, pairs)
        assert len(native) == len(pure)
        assert native.partitions() == pure.partitions()
    # every key either held reads the same, or is absent from both
    for partition in pure.partitions():
        for k in range(301):
            probe = pack_state(2**62, 0, b"\xee" * 8)
            assert native.decide(partition, b"r|%d" % k, probe) == pure.decide(
                partition, b"r|%d" % k, probe
            )


def test_the_c_table_holds_many_keys_through_growth_and_removal() -> None:
    native = NativePoolState()
    n = 50_000
    for i in range(n):
        assert native.decide(0, b"k%d" % i, pack_state(1, i, FP[i % 4]))[0] is Verdict.UPDATE
    assert len(native) == n
    for i in range(0, n, 2):  # undo every other new key: gaps all through the probe chains
        native.undo(0, b"k%d" % i, None)
    assert len(native) == n // 2
    for i in range(n):
        verdict, _ = native.decide(0, b"k%d" % i, pack_state(1, i, FP[i % 4]))
        assert verdict is (Verdict.UPDATE if i % 2 == 0 else Verdict.DUPLICATE)
    # 32-byte slots, the table at least 3/8 full: at most 86 bytes a key
    assert len(native) == n and native.nbytes() <= 32 * 8 / 3 * n + 1024


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((0, b"k", b"short"), ValueError),
        ((0, b"k", "not bytes" * 3), ValueError),
        ((0, [1], pack_state(1, 1, FP[0])), TypeError),  # an unhashable key
        (("p", b"k", pack_state(1, 1, FP[0])), TypeError),  # a partition is an int
    ],
)
def test_the_c_table_refuses_what_is_not_a_state(args: tuple[object, ...], error: type) -> None:
    native = NativePoolState()
    with pytest.raises(error):
        native.decide(*args)  # type: ignore[arg-type]
    assert len(native) == 0
