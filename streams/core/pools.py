"""The resource pools of article 21 (六大基础资源库) plus thematic pools."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BASE_POOLS", "Pool"]


class Pool(StrEnum):
    POPULATION = "population"  # 人口
    LEGAL_PERSON = "legal_person"  # 法人
    SPATIAL = "spatial"  # 空间地理
    E_LICENCE = "e_licence"  # 电子证照
    SOCIAL_CREDIT = "social_credit"  # 社会信用
    MACRO_ECONOMY = "macro_economy"  # 宏观经济
    THEMATIC = "thematic"  # 主题库: other catalog resources


BASE_POOLS: tuple[Pool, ...] = tuple(p for p in Pool if p is not Pool.THEMATIC)
