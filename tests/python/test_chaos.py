"""The fault campaign in CI (docs/reliability.md; `scripts/chaos` runs longer ones): a 3-node
Ferry cluster in the namespace lab under confirmed publishing into two quorum queues and a
stream, with acking consumers on every node, through FERRY_CHAOS_MINUTES (default 5) of mixed
nemeses — kill -9, SIGSTOP, isolation, halves, a bridge node — each healed before the next.
The checker's failure figures (lost, phantom, unexplained duplicates, diverging stream copies,
gaps, short copies) must all be 0."""

from __future__ import annotations

import os

import pytest

from conftest import FERRY_BIN
from harness.chaos import NEMESES_3, Campaign
from harness.cluster import netns_available

pytestmark = pytest.mark.skipif(netns_available() is not None,
                                reason=f"cluster lab: {netns_available()}")

MINUTES = float(os.environ.get("FERRY_CHAOS_MINUTES", "5"))
SEED = int(os.environ.get("FERRY_CHAOS_SEED", str(int.from_bytes(os.urandom(3), "big"))))


@pytest.mark.timeout(int(MINUTES * 60) + 900)
def test_a_mixed_fault_campaign_loses_nothing(tmp_path):
    print(f"chaos seed {SEED} (FERRY_CHAOS_SEED={SEED} makes the same random choices; "
          "timings, and so leaders, differ)")
    c = Campaign(FERRY_BIN, tmp_path, 3, SEED, NEMESES_3, (5.0, 12.0))
    try:
        r = c.run(MINUTES)
    finally:
        c.close()
    print(r)
    assert r["queue_confirmed"] > 0 and r["stream_confirmed"] > 0, r
    assert not r["failed"], f"seed {SEED}: {r}"
