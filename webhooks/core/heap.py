"""The cyclic garbage collector, set for a long-running service process.

CPython's collector runs a young-generation pass every 700 net container allocations
and, now and then, a full pass over every object the process holds. A stage 1 batch
allocates tens of thousands of short-lived containers (parsed bodies, actions, rows),
so the defaults ran about eight young passes a batch, and each full pass walked the
whole heap of imported modules, SQLAlchemy's compiled statements and pydantic's
schemas, none of which ever become garbage: 6-7 % of stage 1's time, measured.

`settle()` is called once a process has finished starting: what exists then is
frozen out of the collector's sight (it lives as long as the process), and young
passes run every YOUNG_THRESHOLD allocations. Reference counting still frees almost
everything at once; the collector is only for cycles, which are rare on these paths,
so they wait a little longer to be freed and memory stays flat (the benchmarks print
the worker's peak RSS).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700
OLDER_THRESHOLD = 10  # passes of the younger generation before an older one (default)


def settle() -> None:
    """Freeze what start-up created and collect young objects less often."""
    gc.collect()  # start-up's own cycles are freed, not frozen for the process's life
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
