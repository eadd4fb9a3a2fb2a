"""The pipeline fixtures (a migrated database of each backend, a scripted Customer.io)."""

from tests.delivery.conftest import cio, engine

__all__ = ["cio", "engine"]
