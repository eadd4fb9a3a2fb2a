"""Four stage-1 workers racing over one person's webhooks end in the same person.

The permutation tests' stacks (one buyer each: a Shopify guest who orders, a Stripe
subscriber, an app with its own ids on both), every webhook of a stack stored at once in
a shuffled order, then four workers (threads, each with its own connections and lease
owner, as four `webhooks worker` processes would have) map them concurrently in small
batches. Every batch is about the same person, so the workers contend for the same
locks (PostgreSQL) or the same state epoch (SQLite) all the time; merges move links
under the feet of the others. The outcome must equal the in-order reference.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
from sqlalchemy.engine import Engine

from tests.stage1.state.test_permutations import (
    CONFIG,
    PEOPLE,
    STACKS,
    STATE,
    arrive,
    check_ids,
    check_order_numbers,
    check_same,
    check_settled,
    customerio,
    deliver,
    fake,
    outcome,
    process,
    reference,
    report_times,
    wipe,
)
from webhooks.fakes.customerio import FakeCustomerIO
from webhooks.stage1.process import process_batch
from webhooks.stage2.customerio import CustomerIO

__all__ = ["customerio", "fake"]  # the module-scoped fixtures, shared

WORKERS = 4
SEEDS = range(4)
IDLE_PASSES = 3  # empty claims in a row before a worker stops


def race(engine: Engine, batch: int) -> list[BaseException]:
    """Four workers map until each finds nothing to do; the errors they raised."""
    errors: list[BaseException] = []
    start = threading.Barrier(WORKERS)

    def work(owner: str) -> None:
        try:
            start.wait()
            idle = 0
            while idle < IDLE_PASSES:
                if process_batch(engine, owner, CONFIG, limit=batch, state=STATE):
                    idle = 0
                else:
                    idle += 1
                    time.sleep(0.01)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    return errors


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("stack", sorted(STACKS))
def test_four_workers_racing_end_in_the_same_person(
    stack: str, seed: int, engine: Engine, fake: FakeCustomerIO, customerio: CustomerIO
) -> None:
    """Whatever worker maps which webhook, when, the person is the in-order one."""
    want = reference(stack, engine, fake, customerio)
    rng = random.Random(seed)
    hooks = rng.sample(STACKS[stack], len(STACKS[stack]))
    wipe(engine)
    fake.reset()
    arrive(engine, hooks, None)
    assert race(engine, batch=rng.choice([1, 2, 3])) == []
    # Rows another worker woke after the others had gone idle (a worker runs forever).
    process(engine, 100)
    deliver(engine, customerio)
    got = outcome(engine, fake)
    check_settled(got)
    check_same(got, want)
    check_ids(got, report_times(STACKS[stack]))
    check_order_numbers(got, PEOPLE[stack])
