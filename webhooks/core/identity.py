"""Who an outbox operation is for: a person id and how strong it is.

Shared by stage 1 (which decides it, webhooks.stage1.state.identity) and the outbox
operations (which address Customer.io with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from webhooks.core.hashing import bounded

# How strong a person id is; a link is taken over only by a stronger one.
ANONYMOUS = 0  # an anonymous id (cart or checkout token): no Customer.io profile
EMAIL = 1  # an email-keyed profile (guest policy "email")
CUSTOMER = 2  # a provider customer id through its format
INTERNAL = 3  # the merchant's own id

MAX_ID_BYTES = 150  # Customer.io's limit on an id


@dataclass(frozen=True)
class Identity:
    """A resolved person: the id Customer.io knows them by, and how strong it is."""

    person_id: str
    rank: int

    @property
    def identifier(self) -> dict[str, str]:
        """The Track API identifier: an email for email-keyed profiles, else an id."""
        return {"email": self.person_id} if self.rank == EMAIL else {"id": self.person_id}

    @property
    def anonymous(self) -> bool:
        """True for an anonymous id: events only, no profile, no attributes."""
        return self.rank == ANONYMOUS


def safe_id(candidate: str) -> str:
    """A Customer.io-safe id: never `cio_...` (its own ids), never over 150 bytes."""
    if candidate.lower().startswith("cio_"):
        candidate = "id:" + candidate
    # Too long to send as is: a stable digest keeps it one person.
    return bounded(candidate, MAX_ID_BYTES, in_bytes=True)
