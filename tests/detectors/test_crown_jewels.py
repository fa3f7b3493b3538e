"""crown_jewel_access: callers outside a declared jewel's learned set, peers notwithstanding."""

from __future__ import annotations

from detectors.crown_jewels import CrownJewelAccess
from tests.detectors.test_scan import baseline, call, fired, replay


def test_new_caller_of_a_jewel_fires_once_per_caller():
    det = CrownJewelAccess(services=["vault.security.*"])
    findings: list = []
    attack = call(70, "cart", "shop", "vault.security", code=200, path="/v1/secret")
    attack += call(71, "cart", "shop", "vault.security", code=403, path="/v1/sys")
    hits = fired(replay(det, baseline() + attack, findings))
    assert hits and {x["source_workload"] for x in hits} == {"cart"}
    assert {f.entity for f in findings} == {"shop/cart"}
    assert findings[0].severity == "critical"  # served
    assert "shop/payment" in findings[0].summary  # the usual callers are listed


def test_usual_callers_siblings_and_undeclared_services_are_quiet():
    det = CrownJewelAccess(services=["vault.*"])
    again = call(70, "payment", "shop", "vault.security")
    assert not fired(replay(det, baseline() + again))
    # Nothing declared: silent even for a brand-new caller.
    new = call(70, "cart", "shop", "vault.security")
    assert not fired(replay(CrownJewelAccess(), baseline() + new))
    # Still learning the jewel: no judgement yet.
    assert not fired(replay(CrownJewelAccess(services=["vault.*"], learning_period=7200),
                            baseline() + new))
