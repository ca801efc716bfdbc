"""The pool state's verdicts against a plain model of the rule: per key, the current
(version, observed-at, fingerprint); the same content is a duplicate, an older version (or
the same one observed earlier) stale, the same version and time with other content a
conflict, anything newer an update."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.pool_state import (
    STATE_HEADER,
    PoolState,
    Verdict,
    current_of,
    pack_state,
    unpack_state,
)

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


@settings(max_examples=400, deadline=None)
@given(arrivals)
def test_verdicts_follow_the_rule_for_any_order_of_arrival(
    seq: list[tuple[int, bytes, int, int, bytes]],
) -> None:
    state = PoolState()
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


def test_undo_puts_back_what_an_update_replaced() -> None:
    state = PoolState()
    first = pack_state(1, 10, FP[0])
    state.decide(0, b"k", first)
    verdict, previous = state.decide(0, b"k", pack_state(2, 10, FP[1]))
    assert verdict is Verdict.UPDATE and current_of(previous) == (1, 10)
    state.undo(0, b"k", previous)
    assert state.decide(0, b"k", pack_state(1, 10, FP[0]))[0] is Verdict.DUPLICATE
    verdict, previous = state.decide(0, b"new", pack_state(1, 1, FP[0]))
    state.undo(0, b"new", previous)
    assert len(state) == 1


def test_restore_takes_the_latest_header_of_each_key_and_replaces_the_partition() -> None:
    state = PoolState()
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
def test_restore_refuses_a_header_that_is_not_a_state(raw: bytes) -> None:
    with pytest.raises(ValueError, match=STATE_HEADER):
        PoolState().restore(0, [(b"k", raw)])


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
