"""Legal bases (法律依据) and the reason codes of refusals (拒绝原因).

A refusal never goes out without a legal basis: :func:`require_basis` is the check every
refusal-carrying object runs in its constructor, so one without a citation cannot be built.

The texts cite national law verbatim where quoted. Article numbers of the provincial
regulation (《吉林省公共数据管理办法》) follow the exchange's design issue; the text after
the citation is a summary, not a quotation.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ARTICLE_24_DUTY",
    "BULK_COPY",
    "CATALOG_ONLY",
    "DSL_38",
    "PIPL_28",
    "PIPL_34",
    "REGISTERED_DEPARTMENTS",
    "PolicyError",
    "PolicyReason",
    "require_basis",
]

#: 《个人信息保护法》第二十八条: sensitive personal information
PIPL_28 = (
    "《中华人民共和国个人信息保护法》第二十八条：敏感个人信息是一旦泄露或者非法使用，"
    "容易导致自然人的人格尊严受到侵害或者人身、财产安全受到危害的个人信息；只有在具有特定的"
    "目的和充分的必要性，并采取严格保护措施的情形下，个人信息处理者方可处理敏感个人信息。"
)
#: 《个人信息保护法》第三十四条: state organs within their statutory duties only
PIPL_34 = (
    "《中华人民共和国个人信息保护法》第三十四条：国家机关为履行法定职责处理个人信息，应当依照"
    "法律、行政法规规定的权限、程序进行，不得超出履行法定职责所必需的范围和限度。"
)
#: 《数据安全法》第三十八条: state organs collect and use data within their duties
DSL_38 = (
    "《中华人民共和国数据安全法》第三十八条：国家机关为履行法定职责的需要收集、使用数据，"
    "应当在其履行法定职责的范围内依照法律、行政法规规定的条件和程序进行。"
)
#: a request must state the duty it serves
ARTICLE_24_DUTY = (
    "《吉林省公共数据管理办法》第二十四条（摘要）：使用共享数据应当以履行本部门法定职责为限，"
    "申请时应当说明所依据的职责和用途。"
)
#: only departments on the responsibility list take part in sharing
REGISTERED_DEPARTMENTS = (
    "《吉林省公共数据管理办法》第二十二条（摘要）：公共数据共享在列入共享责任清单的公共管理和"
    "服务机构之间进行。" + DSL_38
)
#: sharing follows the catalog
CATALOG_ONLY = (
    "《吉林省公共数据管理办法》第十五条（摘要）：公共数据依目录共享，目录未列入或者未生效的"
    "数据项不予共享。"
)
#: bulk copies need an approval on record
BULK_COPY = (
    "《吉林省公共数据管理办法》第二十六条（摘要）：批量获取共享数据应当经公共数据主管部门审批，"
    "并在批准的范围、用途、数量和期限内使用。" + PIPL_34
)


class PolicyError(ValueError):
    """A list, entry, approval or request that cannot be accepted; the message says why.

    ``problems`` lists every reason when several checks fail at once."""

    def __init__(self, message: str, problems: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class PolicyReason(StrEnum):
    """Why a request (or one field of it) is refused. Each refusal also cites its basis."""

    NO_DUTY = "NO_DUTY"  # the request states no duty (article 24)
    UNREGISTERED_DEPARTMENT = "UNREGISTERED_DEPARTMENT"  # not on the responsibility list
    DUTY_NOT_OF_REQUESTER = "DUTY_NOT_OF_REQUESTER"  # the duty is not one of the requester's
    UNKNOWN_RESOURCE = "UNKNOWN_RESOURCE"  # not in the catalog
    RESOURCE_NOT_IN_FORCE = "RESOURCE_NOT_IN_FORCE"  # in the catalog, not in force
    UNKNOWN_FIELD = "UNKNOWN_FIELD"  # a requested field the resource does not have
    NEGATIVE_LIST = "NEGATIVE_LIST"  # the resource, or every requested field, is on it
    NOT_SHARED = "NOT_SHARED"  # the catalog says not_shared
    NO_DEMAND_ENTRY = "NO_DEMAND_ENTRY"  # conditional, and no demand entry of the requester
    BULK_NEEDS_APPROVAL = "BULK_NEEDS_APPROVAL"  # bulk copy without an approval on record
    APPROVAL_MISMATCH = "APPROVAL_MISMATCH"  # the approval is for another request
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    APPROVAL_REVOKED = "APPROVAL_REVOKED"
    APPROVAL_EXHAUSTED = "APPROVAL_EXHAUSTED"  # its quota of uses is spent


def require_basis(basis: object, what: str = "a refusal") -> str:
    """``basis`` as a stripped string; raises :class:`PolicyError` when there is none."""
    if not isinstance(basis, str) or not basis.strip():
        raise PolicyError(f"{what} needs a legal basis (the article it rests on); none given")
    return basis.strip()
