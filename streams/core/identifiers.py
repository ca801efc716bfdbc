"""Identifiers from Chinese national standards, as pure functions.

- GB 11643-1999 公民身份号码 (citizen identity number): six-digit address code, eight-digit
  birth date, three-digit sequence (odd for men, even for women), one check character.
- GB 32100-2015 统一社会信用代码 (unified social credit code): registration authority,
  organisation category, six-digit region code, nine-character organisation code
  (GB 11714), one check character.

Nothing here touches a clock, a file or the network; validation functions never raise on
bad input, whatever its type or size.
"""

from __future__ import annotations

import datetime as _dt
import random
import re

__all__ = [
    "CREDIT_CODE_ALPHABET",
    "citizen_id_check_char",
    "citizen_id_error",
    "credit_code_check_char",
    "credit_code_error",
    "is_valid_citizen_id",
    "is_valid_credit_code",
    "is_valid_date",
    "make_citizen_id",
    "make_credit_code",
]

# First two digits of a GB/T 2260 province-level code (including Taiwan 71, Hong Kong 81,
# Macao 82 and 83 used in residence permits for Taiwan residents).
_PROVINCE_PREFIXES = frozenset(
    {
        *("11", "12", "13", "14", "15", "21", "22", "23"),
        *("31", "32", "33", "34", "35", "36", "37", "41", "42", "43", "44", "45", "46"),
        *("50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71", "81", "82", "83"),
    }
)

# --------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Every month and day of a common year, as "MM-DD" and as "MMDD", taken from the calendar
# itself; 29 February is the one day that also needs a leap year. Set lookups replace building
# a datetime.date per check (the ingest checks several dates per record).
_COMMON_YEAR = tuple(_dt.date(2001, 1, 1) + _dt.timedelta(days=i) for i in range(365))
_MM_DD = frozenset(f"{d:%m-%d}" for d in _COMMON_YEAR)
_MMDD = frozenset(f"{d:%m%d}" for d in _COMMON_YEAR)


def _real_date(year: int, month_day: str, common: frozenset[str], leap_day: str) -> bool:
    """Whether ``datetime.date`` takes ``year`` with ``month_day``: one of ``common`` (a
    common year's days), or ``leap_day`` (29 February) in a leap year."""
    if not _dt.MINYEAR <= year <= _dt.MAXYEAR:
        return False
    if month_day in common:
        return True
    # proleptic Gregorian leap years, as datetime has them
    return month_day == leap_day and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_valid_date(s: object) -> bool:
    """True for an ISO calendar date ``YYYY-MM-DD`` that exists (no 1999-02-30)."""
    if not isinstance(s, str) or len(s) != 10:
        return False
    # _ISO_DATE.fullmatch, taken apart: a month and day in _MM_DD are ASCII digits around a
    # hyphen, and on an ASCII string isdigit() is true for 0-9 only.
    month_day = s[5:]
    if month_day in _MM_DD:
        if s[4] != "-" or not s.isascii() or not s[:4].isdigit():
            return False
        return s[:4] != "0000"  # a common year's day exists in every year but year 0
    if _ISO_DATE.fullmatch(s) is None:
        return False
    return _real_date(int(s[:4]), month_day, _MM_DD, "02-29")


# --------------------------------------------------------------------------------------
# GB 11643-1999 citizen identity number
# --------------------------------------------------------------------------------------

_ID_CHECK = "10X98765432"
_ID_17 = re.compile(r"[0-9]{17}")
_ID_18 = re.compile(r"[0-9]{17}[0-9X]")  # _ID_17 and a check character 0-9 or X
_ID_MIN_YEAR = 1850
_ID_MIN_YEAR_DIGITS = f"{_ID_MIN_YEAR:04d}"


def _id_check_char(first17: str) -> str:
    """The check character of 17 ASCII digits (the caller has matched ``_ID_17``).

    The k-th weight is 2**(18-k) mod 11, so the weighted sum is 2 * sum(d_k * 2**(17-k)) mod
    11; reading the digits as a base-13 number gives sum(d_k * 13**(17-k)), the same mod 11
    because 13 = 2 (mod 11). One int() instead of 17 multiplications; the unit tests hold it
    to the weighted sum.
    """
    return _ID_CHECK[2 * int(first17, 13) % 11]


def citizen_id_check_char(first17: str) -> str:
    """The check character for the first 17 digits of a citizen identity number.

    Raises ``ValueError`` unless ``first17`` is exactly 17 ASCII digits.
    """
    if not isinstance(first17, str) or _ID_17.fullmatch(first17) is None:
        raise ValueError("need exactly 17 ASCII digits")
    return _id_check_char(first17)


# The ingest checks a record's subject id and then, mostly, the same identifier in its
# payload. Each validator remembers the last string it found valid and answers None for an
# equal one: the answer depends on the string alone. Exact str only (a subclass may redefine
# ==); a single item swapped whole, so threads cannot see a half-written value.
_last_valid_citizen_id: list[str | None] = [None]
_last_valid_credit_code: list[str | None] = [None]


def citizen_id_error(s: object) -> str | None:
    """None for a valid citizen identity number, else a short reason (never echoes input)."""
    if type(s) is str and s == _last_valid_citizen_id[0]:
        return None
    if not isinstance(s, str):
        return "not a string"
    if len(s) != 18:
        return "not 18 characters"
    if _ID_18.fullmatch(s) is None:
        return "bad format"
    if s[:2] not in _PROVINCE_PREFIXES:
        return "bad region code"
    # Four ASCII digits compare as their numbers do; a common year's day exists in any year.
    year, month_day = s[6:10], s[10:14]
    if year < _ID_MIN_YEAR_DIGITS or (
        month_day not in _MMDD and not _real_date(int(year), month_day, _MMDD, "0229")
    ):
        return "bad birth date"
    if _id_check_char(s[:17]) != s[17]:
        return "bad check character"
    if type(s) is str:
        _last_valid_citizen_id[0] = s
    return None


def is_valid_citizen_id(s: object) -> bool:
    """GB 11643-1999: 17 digits, a real birth date, a region code and the right check char.

    The check character ``X`` must be upper case, as the standard writes it.
    """
    return citizen_id_error(s) is None


def make_citizen_id(rng: random.Random, region: str, birth: _dt.date) -> str:
    """A valid identity number for someone registered in ``region`` born on ``birth``.

    The sex digit (17th) is random: odd for a man, even for a woman.
    """
    if len(region) != 6 or not region.isascii() or not region.isdigit():
        raise ValueError("region must be a six-digit code")
    first17 = f"{region}{birth:%Y%m%d}{rng.randrange(1000):03d}"
    return first17 + citizen_id_check_char(first17)


# --------------------------------------------------------------------------------------
# GB 32100-2015 unified social credit code
# --------------------------------------------------------------------------------------

CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, S, V, Z
_CC_REGION = re.compile(r"[0-9]{6}")
_CC_CHARS = frozenset(CREDIT_CODE_ALPHABET)
# 18 characters of the alphabet (all ASCII letters and digits, nothing to escape)
_CC_18 = re.compile(f"[{CREDIT_CODE_ALPHABET}]{{18}}")
# bytes.translate table: an alphabet character -> the base-36 digit of its value (0-9, A-U)
_CC_AS_DIGIT = bytes.maketrans(CREDIT_CODE_ALPHABET.encode(), b"0123456789ABCDEFGHIJKLMNOPQRSTU")


def _cc_check_char(first17: str) -> str:
    """The check character of 17 alphabet characters (the caller has checked them).

    The i-th weight is 3**(i-1) mod 31, so the weighted sum is sum(c_i * 3**(i-1)) mod 31;
    reading the values in reverse order as a base-34 number gives sum(c_i * 34**(i-1)), the
    same mod 31 because 34 = 3 (mod 31). The unit tests hold it to the weighted sum.
    """
    total = int(first17.encode().translate(_CC_AS_DIGIT)[::-1], 34)
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


# GB 11714 organisation code (characters 9-17): eight characters and a check character.
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def credit_code_check_char(first17: str) -> str:
    """The check character for the first 17 characters of a unified social credit code.

    Raises ``ValueError`` if ``first17`` is not 17 characters of the code's alphabet.
    """
    if not isinstance(first17, str) or len(first17) != 17:
        raise ValueError("need exactly 17 characters")
    if not _CC_CHARS.issuperset(first17):
        raise ValueError(f"characters outside {CREDIT_CODE_ALPHABET}")
    return _cc_check_char(first17)


def credit_code_error(s: object) -> str | None:
    """None for a valid unified social credit code, else a short reason."""
    if type(s) is str and s == _last_valid_credit_code[0]:
        return None
    if not isinstance(s, str):
        return "not a string"
    if len(s) != 18:
        return "not 18 characters"
    if _CC_18.fullmatch(s) is None:
        return "bad format"
    region = s[2:8]
    if _CC_REGION.fullmatch(region) is None or (
        region[:2] not in _PROVINCE_PREFIXES and region != "100000"  # 100000: national
    ):
        return "bad region code"
    if _cc_check_char(s[:17]) != s[17]:
        return "bad check character"
    if type(s) is str:
        _last_valid_credit_code[0] = s
    return None


def is_valid_credit_code(s: object) -> bool:
    """GB 32100-2015: 18 characters of the alphabet, a region code and the right check char."""
    return credit_code_error(s) is None


def _org_code(rng: random.Random) -> str:
    """A GB 11714 organisation code (eight characters plus its check character)."""
    body = "".join(rng.choice(_ORG_ALPHABET) for _ in range(8))
    # GB 11714 values letters A=10 ... Z=35 (the full Latin alphabet).
    total = sum(int(c, 36) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return body + ("X" if check == 10 else "0" if check == 11 else str(check))


def make_credit_code(
    rng: random.Random, region: str, *, authority: str = "9", category: str = "1"
) -> str:
    """A valid credit code registered in ``region``.

    Defaults to registration authority 9 (market regulation) and category 1 (enterprise);
    characters 9-17 are a valid GB 11714 organisation code.
    """
    if _CC_REGION.fullmatch(region) is None:
        raise ValueError("region must be a six-digit code")
    first17 = f"{authority}{category}{region}{_org_code(rng)}"
    return first17 + credit_code_check_char(first17)
