"""MITRE ATT&CK names for the tactic and technique ids detectors map to.

Detectors carry ids only (``mitre = ("TA0008", "T1021")``: a tactic followed by its techniques);
sinks that speak structured formats (OCSF ``attacks``) need the names and the pairing. Every id a
pipeline detector uses must be listed here (checked by the test suite).
"""

from __future__ import annotations

from collections.abc import Iterable

ATTACK_VERSION = "v15"

TACTICS = {
    "TA0001": "Initial Access",
    "TA0002": "Execution",
    "TA0004": "Privilege Escalation",
    "TA0005": "Defense Evasion",
    "TA0006": "Credential Access",
    "TA0007": "Discovery",
    "TA0008": "Lateral Movement",
    "TA0009": "Collection",
    "TA0010": "Exfiltration",
    "TA0011": "Command and Control",
    "TA0040": "Impact",
}

TECHNIQUES = {
    "T1021": "Remote Services",
    "T1040": "Network Sniffing",
    "T1041": "Exfiltration Over C2 Channel",
    "T1046": "Network Service Discovery",
    "T1071": "Application Layer Protocol",
    "T1078": "Valid Accounts",
    "T1190": "Exploit Public-Facing Application",
    "T1210": "Exploitation of Remote Services",
    "T1499": "Endpoint Denial of Service",
    "T1557": "Adversary-in-the-Middle",
    "T1599": "Network Boundary Bridging",
}


def name(uid: str) -> str | None:
    """The ATT&CK name of a tactic or technique id (sub-techniques fall back to the parent)."""
    return TACTICS.get(uid) or TECHNIQUES.get(uid) or TECHNIQUES.get(uid.split(".", 1)[0])


def pairs(ids: Iterable[str]) -> list[tuple[str | None, str | None]]:
    """(tactic, technique) pairs: each technique goes with the tactic listed before it.

    >>> pairs(("TA0006", "T1040", "TA0008", "T1557"))
    [('TA0006', 'T1040'), ('TA0008', 'T1557')]
    >>> pairs(("T1046",)), pairs(("TA0007",))
    ([(None, 'T1046')], [('TA0007', None)])
    """
    out: list[tuple[str | None, str | None]] = []
    tactic: str | None = None
    used = True
    for uid in ids:
        if uid.startswith("TA"):
            if not used:
                out.append((tactic, None))
            tactic, used = uid, False
        else:
            out.append((tactic, uid))
            used = True
    if not used:
        out.append((tactic, None))
    return out
