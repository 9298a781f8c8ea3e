"""The store for a broker with no disk: nothing survives a restart."""
from .base import Store


class MemoryStore(Store):
    durable = False
