"""GB 11643-1999, GB 32100-2015 and GB/T 2260 checks against known vectors."""

from __future__ import annotations

import datetime as dt
import random

import pytest

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
from streams.core.regions import CITIES, REGIONS, city_of, districts_of, is_region

# The sample in GB 11643-1999 itself (Beijing Chaoyang, born 1949-12-31, check char X).
GB11643_SAMPLE = "11010519491231002X"
# A published GB 32100-2015 example (Fuzhou, organisation code M000100Y4).
GB32100_SAMPLE = "91350100M000100Y43"


# ---- citizen identity number ----------------------------------------------------------------


def test_citizen_id_standard_sample_is_valid() -> None:
    assert citizen_id_check_char(GB11643_SAMPLE[:17]) == "X"
    assert is_valid_citizen_id(GB11643_SAMPLE)
    assert citizen_id_error(GB11643_SAMPLE) is None


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        # by hand: the weighted sum mod 11 indexes "10X98765432"
        ("11010519491231002", "X"),  # sum 167, 167 % 11 = 2 -> X
        ("22010219800101001", "2"),  # sum 120, 120 % 11 = 10 -> 2
        ("22010219800101002", "0"),  # sum 122, 122 % 11 = 1 -> 0
        ("00000000000000000", "1"),  # sum 0 -> "1"
    ],
)
def test_citizen_id_check_char_vectors(first17: str, check: str) -> None:
    assert citizen_id_check_char(first17) == check


def test_citizen_id_every_single_digit_substitution_is_caught() -> None:
    # The weights are all non-zero mod 11 (a prime), so one wrong digit always changes the sum.
    for pos in range(17):
        for d in "0123456789":
            if d == GB11643_SAMPLE[pos]:
                continue
            mutated = GB11643_SAMPLE[:pos] + d + GB11643_SAMPLE[pos + 1 :]
            assert not is_valid_citizen_id(mutated), mutated


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("110105194912310021", "bad check character"),
        ("11010519491231002x", "bad format"),  # the standard writes an upper-case X
        ("1101051949123100", "not 18 characters"),
        ("11010519491231002X ", "not 18 characters"),
        ("１10105194912310021", "bad format"),  # full-width digit
        ("A1010519491231002X", "bad format"),
        (None, "not a string"),
        (110105194912310020, "not a string"),
    ],
)
def test_citizen_id_rejects(value: object, error: str) -> None:
    assert citizen_id_error(value) == error
    assert not is_valid_citizen_id(value)


def _with_check(first17: str) -> str:
    return first17 + citizen_id_check_char(first17)


def test_citizen_id_birth_date_must_be_real() -> None:
    # Right check character, impossible birth date 1999-02-30.
    bad = _with_check("22010219990230001")
    assert citizen_id_error(bad) == "bad birth date"
    assert citizen_id_error(_with_check("22010219001301001")) == "bad birth date"  # month 13
    assert citizen_id_error(_with_check("22010219000229001")) == "bad birth date"  # 1900 not leap
    assert citizen_id_error(_with_check("22010218000101001")) == "bad birth date"  # before 1850
    assert is_valid_citizen_id(_with_check("22010220000229001"))  # 2000 is a leap year


def test_citizen_id_region_prefix_must_be_a_province() -> None:
    assert citizen_id_error(_with_check("99010219800101001")) == "bad region code"
    assert citizen_id_error(_with_check("00010219800101001")) == "bad region code"
    assert is_valid_citizen_id(_with_check("81000019800101001"))  # Hong Kong permit prefix


def test_make_citizen_id_is_valid_and_embeds_region_and_birth() -> None:
    rng = random.Random(1)
    for _ in range(500):
        birth = dt.date.fromordinal(rng.randrange(dt.date(1900, 1, 1).toordinal(), 740000))
        cid = make_citizen_id(rng, "222401", birth)
        assert is_valid_citizen_id(cid), cid
        assert cid[:6] == "222401"
        assert cid[6:14] == birth.strftime("%Y%m%d")
    a = make_citizen_id(random.Random(5), "220102", dt.date(1980, 1, 1))
    b = make_citizen_id(random.Random(5), "220102", dt.date(1980, 1, 1))
    assert a == b
    with pytest.raises(ValueError):
        make_citizen_id(rng, "2201", dt.date(1980, 1, 1))


def test_citizen_id_check_char_rejects_bad_input() -> None:
    for bad in ("1101051949123100", "1101051949123100A", "１1010519491231002"):
        with pytest.raises(ValueError):
            citizen_id_check_char(bad)


# ---- unified social credit code ---------------------------------------------------------------


def test_credit_code_published_example_is_valid() -> None:
    assert credit_code_check_char(GB32100_SAMPLE[:17]) == "3"
    assert is_valid_credit_code(GB32100_SAMPLE)
    assert credit_code_error(GB32100_SAMPLE) is None


def test_credit_code_check_char_by_hand() -> None:
    # 9 1 3 5 0 1 0 0 M(21) 0 0 0 1 0 0 Y(30) 4 with weights 1 3 9 27 19 26 16 17 20 29 25 13 8
    # 24 10 30 28: 9+3+27+135+0+26+0+0+420+0+0+0+8+0+0+900+112 = 1640; 1640 % 31 = 28;
    # 31 - 28 = 3 -> "3".
    assert CREDIT_CODE_ALPHABET.index("M") == 21
    assert CREDIT_CODE_ALPHABET.index("Y") == 30
    assert credit_code_check_char("91350100M000100Y4") == "3"


def test_credit_code_every_single_substitution_is_caught() -> None:
    # The weights are all non-zero mod 31 (a prime): any one wrong character is detected.
    for pos in range(18):
        for c in CREDIT_CODE_ALPHABET:
            if c == GB32100_SAMPLE[pos]:
                continue
            mutated = GB32100_SAMPLE[:pos] + c + GB32100_SAMPLE[pos + 1 :]
            assert not is_valid_credit_code(mutated), mutated


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("91350100M000100Y44", "bad check character"),
        ("91350100M000100Y4", "not 18 characters"),
        ("91350100I000100Y43", "bad format"),  # I, O, S, V, Z are not in the alphabet
        ("91350100O000100Y43", "bad format"),
        ("91350100m000100Y43", "bad format"),  # lower case
        ("91ABCDEFM000100Y43", "bad region code"),
        (None, "not a string"),
    ],
)
def test_credit_code_rejects(value: object, error: str) -> None:
    assert credit_code_error(value) == error
    assert not is_valid_credit_code(value)


def test_credit_code_national_region_is_allowed() -> None:
    first17 = "51100000500000012"  # a body registered at the national level (region 100000)
    assert is_valid_credit_code(first17 + credit_code_check_char(first17))


def test_make_credit_code_is_valid_and_embeds_region() -> None:
    rng = random.Random(3)
    for _ in range(500):
        code = make_credit_code(rng, "220104")
        assert is_valid_credit_code(code), code
        assert code[:2] == "91" and code[2:8] == "220104"
    assert make_credit_code(random.Random(9), "220100") == make_credit_code(
        random.Random(9), "220100"
    )
    with pytest.raises(ValueError):
        make_credit_code(rng, "22010")


def test_credit_code_check_char_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        credit_code_check_char("91350100M000100Y")
    with pytest.raises(ValueError):
        credit_code_check_char("91350100I000100Y4")


# ---- region codes ---------------------------------------------------------------------------


def test_cities_are_the_nine_prefecture_level_divisions() -> None:
    assert CITIES == (
        "220100",
        "220200",
        "220300",
        "220400",
        "220500",
        "220600",
        "220700",
        "220800",
        "222400",
    )
    assert REGIONS["220000"] == "吉林省"
    assert REGIONS["222400"] == "延边朝鲜族自治州"
    assert REGIONS["220102"] == "南关区"
    assert REGIONS["222401"] == "延吉市"


def test_every_region_is_six_digits_under_a_known_city() -> None:
    for code in REGIONS:
        assert len(code) == 6 and code.isdigit() and code.startswith("22")
        assert city_of(code) in (*CITIES, "220000")
        assert city_of(code) in REGIONS


@pytest.mark.parametrize(
    ("code", "city"),
    [("220000", "220000"), ("220100", "220100"), ("220104", "220100"), ("222426", "222400")],
)
def test_city_of(code: str, city: str) -> None:
    assert city_of(code) == city


@pytest.mark.parametrize("code", ["220199", "210100", "2201", "", "220100 ", None, 220100])
def test_unknown_regions(code: object) -> None:
    assert not is_region(code)
    with pytest.raises(ValueError):
        city_of(code)  # type: ignore[arg-type]


def test_districts_of() -> None:
    assert "220102" in districts_of("220100")
    assert all(d.startswith("2224") for d in districts_of("222400"))
    assert set(districts_of("220000")) == {c for c in REGIONS if not c.endswith("00")}


# ---- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("s", ["1999-12-31", "2000-02-29", "2024-02-29", "1949-10-01"])
def test_valid_dates(s: str) -> None:
    assert is_valid_date(s)


@pytest.mark.parametrize(
    "s",
    [
        "1999-02-30",
        "2023-02-29",
        "1900-02-29",
        "2024-13-01",
        "2024-00-10",
        "2024-04-31",
        "19990230",
        "20240101",
        "2024-1-01",
        "2024-01-01\n",
        "２０２４-01-01",
        "2024-01-01T00:00:00",
        "",
        None,
        20240101,
    ],
)
def test_invalid_dates(s: object) -> None:
    assert not is_valid_date(s)


# ---- the fast paths agree with the definitions -------------------------------------------------


def test_check_characters_are_the_weighted_sums_of_the_standards() -> None:
    # citizen_id_check_char reads the digits in base 13 and credit_code_check_char the values
    # in base 34 (see their helpers); both must equal the standards' weighted sums.
    id_weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    cc_weights = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    rng = random.Random(11643)
    for _ in range(5000):
        digits = "".join(rng.choice("0123456789") for _ in range(17))
        total = sum(int(c) * w for c, w in zip(digits, id_weights, strict=True))
        assert citizen_id_check_char(digits) == "10X98765432"[total % 11], digits
        code = "".join(rng.choice(CREDIT_CODE_ALPHABET) for _ in range(17))
        values = [CREDIT_CODE_ALPHABET.index(c) for c in code]
        total = sum(v * w for v, w in zip(values, cc_weights, strict=True))
        assert credit_code_check_char(code) == CREDIT_CODE_ALPHABET[(31 - total % 31) % 31], code


def _is_real_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("year", [0, 1, 4, 100, 1600, 1849, 1850, 1900, 2000, 2023, 2024, 9999])
def test_dates_agree_with_the_calendar(year: int) -> None:
    # is_valid_date and the birth date in an identity number look days up in tables
    for month in range(14):
        for day in range(33):
            real = _is_real_date(year, month, day)
            assert is_valid_date(f"{year:04d}-{month:02d}-{day:02d}") is real
            first17 = f"220102{year:04d}{month:02d}{day:02d}001"
            error = citizen_id_error(first17 + citizen_id_check_char(first17))
            expected = None if real and year >= 1850 else "bad birth date"
            assert error == expected, first17


def test_a_remembered_valid_identifier_answers_only_for_an_equal_string() -> None:
    # The validators remember the last valid string; nothing else may pass because of it.
    class Sly(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    assert citizen_id_error(GB11643_SAMPLE) is None
    assert citizen_id_error(GB11643_SAMPLE) is None  # from memory
    assert citizen_id_error(GB11643_SAMPLE[:-1] + "1") == "bad check character"
    assert citizen_id_error(Sly("110105194912310021")) == "bad check character"
    assert credit_code_error(GB32100_SAMPLE) is None
    assert credit_code_error(GB32100_SAMPLE) is None
    assert credit_code_error(GB32100_SAMPLE[:-1] + "4") == "bad check character"
    assert credit_code_error(Sly("91350100M000100Y44")) == "bad check character"
