"""Pure domain of the exchange, no I/O: region codes (GB/T 2260), identifiers
(GB 11643, GB 32100), reason codes, resource pools and collection channels, and the review
workflow the registers share (:mod:`streams.core.review`).
"""

from __future__ import annotations

from streams.core.channel import Channel
from streams.core.identifiers import (
    CREDIT_CODE_ALPHABET,
    citizen_id_check_char,
    citizen_id_error,
    credit_code_check_char,
    credit_code_error,
    is_valid_citizen_id,
    is_valid_credit_code,
    is_valid_date,
    make_citizen_id,
    make_credit_code,
)
from streams.core.pools import BASE_POOLS, Pool
from streams.core.reasons import Reason
from streams.core.regions import CITIES, PROVINCE, REGIONS, city_of, districts_of, is_region

__all__ = [
    "BASE_POOLS",
    "CITIES",
    "CREDIT_CODE_ALPHABET",
    "PROVINCE",
    "REGIONS",
    "Channel",
    "Pool",
    "Reason",
    "citizen_id_check_char",
    "citizen_id_error",
    "city_of",
    "credit_code_check_char",
    "credit_code_error",
    "districts_of",
    "is_region",
    "is_valid_citizen_id",
    "is_valid_credit_code",
    "is_valid_date",
    "make_citizen_id",
    "make_credit_code",
]
