"""GB/T 2260 administrative region codes of Jilin province (吉林省行政区划代码).

The one home of the province's region codes: the catalog, the identifiers and the ingest
all read them here. Pure data and functions, no I/O.
"""

from __future__ import annotations

__all__ = ["CITIES", "PROVINCE", "REGIONS", "city_of", "districts_of", "is_region"]


PROVINCE = "220000"

REGIONS: dict[str, str] = {
    "220000": "吉林省",
    # 长春市 Changchun
    "220100": "长春市",
    "220102": "南关区",
    "220103": "宽城区",
    "220104": "朝阳区",
    "220105": "二道区",
    "220106": "绿园区",
    "220112": "双阳区",
    "220113": "九台区",
    "220122": "农安县",
    "220182": "榆树市",
    "220183": "德惠市",
    "220184": "公主岭市",
    # 吉林市 Jilin City
    "220200": "吉林市",
    "220202": "昌邑区",
    "220203": "龙潭区",
    "220204": "船营区",
    "220211": "丰满区",
    "220221": "永吉县",
    "220281": "蛟河市",
    "220282": "桦甸市",
    "220283": "舒兰市",
    "220284": "磐石市",
    # 四平市 Siping
    "220300": "四平市",
    "220302": "铁西区",
    "220303": "铁东区",
    "220322": "梨树县",
    "220323": "伊通满族自治县",
    "220382": "双辽市",
    # 辽源市 Liaoyuan
    "220400": "辽源市",
    "220402": "龙山区",
    "220403": "西安区",
    "220421": "东丰县",
    "220422": "东辽县",
    # 通化市 Tonghua
    "220500": "通化市",
    "220502": "东昌区",
    "220503": "二道江区",
    "220521": "通化县",
    "220523": "辉南县",
    "220524": "柳河县",
    "220581": "梅河口市",
    "220582": "集安市",
    # 白山市 Baishan
    "220600": "白山市",
    "220602": "浑江区",
    "220605": "江源区",
    "220621": "抚松县",
    "220622": "靖宇县",
    "220623": "长白朝鲜族自治县",
    "220681": "临江市",
    # 松原市 Songyuan
    "220700": "松原市",
    "220702": "宁江区",
    "220721": "前郭尔罗斯蒙古族自治县",
    "220722": "长岭县",
    "220723": "乾安县",
    "220781": "扶余市",
    # 白城市 Baicheng
    "220800": "白城市",
    "220802": "洮北区",
    "220821": "镇赉县",
    "220822": "通榆县",
    "220881": "洮南市",
    "220882": "大安市",
    # 延边朝鲜族自治州 Yanbian Korean Autonomous Prefecture
    "222400": "延边朝鲜族自治州",
    "222401": "延吉市",
    "222402": "图们市",
    "222403": "敦化市",
    "222404": "珲春市",
    "222405": "龙井市",
    "222406": "和龙市",
    "222424": "汪清县",
    "222426": "安图县",
}

CITIES: tuple[str, ...] = tuple(
    c for c in REGIONS if c != PROVINCE and c.endswith("00")
)  # the nine prefecture-level divisions: 220100 ... 220800 and 222400


def is_region(code: object) -> bool:
    """True for a known Jilin GB/T 2260 code (the province, a city or a county/district)."""
    return isinstance(code, str) and code in REGIONS


def city_of(code: str) -> str:
    """The prefecture-level code of a known region; the province maps to itself.

    Raises ``ValueError`` for a code that is not a known Jilin region.
    """
    if not is_region(code):
        raise ValueError(f"not a known Jilin region code: {code!r:.40}")
    return code if code == PROVINCE else code[:4] + "00"


def districts_of(city: str) -> tuple[str, ...]:
    """County-level codes of a city (all of them for the province itself)."""
    if city == PROVINCE:
        return tuple(c for c in REGIONS if not c.endswith("00"))
    return tuple(c for c in REGIONS if c[:4] == city[:4] and not c.endswith("00"))
