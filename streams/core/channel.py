"""Collection channels (采集渠道), article 17."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Channel"]


class Channel(StrEnum):
    """Collection channel, article 17 (直接采集, 委托第三方采集, 协商采集)."""

    DIRECT = "DIRECT"
    COMMISSIONED = "COMMISSIONED"
    AGREEMENT = "AGREEMENT"
