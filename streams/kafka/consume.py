"""Reading what has arrived: the one home for "a batch, but no waiting once there is one"."""

from __future__ import annotations

from confluent_kafka import Consumer, Message

__all__ = ["read_available"]


def read_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages`` messages (errors and end-of-partition events included): those
    already fetched, else the first to arrive within ``timeout`` seconds and those with it.

    ``consumer.consume(n, timeout)`` returns early only once ``n`` messages are there: below
    that rate every batch waited out its whole timeout, which was most of a request's round
    trip. Rebalance callbacks are served as by ``consume``."""
    messages = consumer.consume(max_messages, 0)
    if messages or max_messages < 2:
        return messages or _one(consumer, timeout)
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, 0)]


def _one(consumer: Consumer, timeout: float) -> list[Message]:
    first = consumer.poll(timeout)
    return [] if first is None else [first]
