from .base import Recovered, Store
from .memory import MemoryStore

__all__ = ["Store", "MemoryStore", "Recovered"]
