"""The garbage collector's settings for service processes (webhooks.core.heap)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from webhooks.core import heap

# In a process of its own: settling changes the interpreter for the rest of its life.
PROBE = textwrap.dedent(
    """
    import gc, json, weakref
    from webhooks.core import heap

    class Node:
        pass

    def cycle():
        a, b = Node(), Node()
        a.other, b.other = b, a
        return weakref.ref(a)

    before = cycle()  # garbage already at start-up: freed, not frozen
    heap.settle()
    after = cycle()  # garbage made later: still found by the collector
    gc.collect()
    print(json.dumps({
        "threshold": gc.get_threshold(),
        "frozen": gc.get_freeze_count(),
        "startup_cycle_freed": before() is None,
        "later_cycle_freed": after() is None,
    }))
    """
)


def test_settle_freezes_start_up_and_collects_young_objects_less_often() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout)
    assert seen["threshold"] == [heap.YOUNG_THRESHOLD, heap.OLDER_THRESHOLD, heap.OLDER_THRESHOLD]
    assert heap.YOUNG_THRESHOLD > 700  # CPython's default: the point of settling
    # Everything start-up left (modules, classes) is out of the collector's walks...
    assert seen["frozen"] > 1000
    # ...except start-up's own garbage, which is freed rather than kept for good, and
    # cycles made afterwards are still collected: only their timing changes.
    assert seen["startup_cycle_freed"] is True
    assert seen["later_cycle_freed"] is True
