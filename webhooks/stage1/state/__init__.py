"""Identity resolution, server-truth person state and journey guards (worker stage 1).

The pure rules live in `keys`, `identity`, `person` and `guards`; `step` applies them to
a batch of mapped deliveries inside stage 1's transaction, and `store` reads and writes
the tables they keep.
"""
