"""Stores of procedures: the contract and its backends."""

from procmem.stores.base import ProcedureStore
from procmem.stores.memory import InMemoryStore
from procmem.stores.sqlite import SQLiteStore

__all__ = ["InMemoryStore", "ProcedureStore", "SQLiteStore"]
