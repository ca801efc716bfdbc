"""The sharing policy (共享责任清单、需求清单、负面清单): pure registers and decisions, no I/O.

- :mod:`streams.policy.legal`: the legal bases every refusal cites and the reason codes;
- :mod:`streams.policy.masks`: field masks as Apache Ranger names them, and applying them;
- :mod:`streams.policy.model`: the three lists, their versions, and a city's derivation from
  the province's lists (it may add restrictions, never lift one);
- :mod:`streams.policy.approvals`: bulk-copy approvals (quota, expiry, revocation, uses);
- :mod:`streams.policy.decision`: :func:`~streams.policy.decision.decide`, the one answer to
  "may this department get these fields of this resource for this duty";
- :mod:`streams.policy.review`: versions, review and history of the lists and approvals, as
  events and bounded snapshots a Kafka store writes and follows.
"""
