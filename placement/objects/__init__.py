"""Placement's storage layer, one module per resource (as OpenStack
Placement's ``objects/``): every write is one short transaction.

Each function takes an open ``Connection`` (from ``Database.write()`` or
``Database.read()``) and raises ``kova.placement.errors`` exceptions with the
status and error code OpenStack Placement answers for the same failure.
Writers lock the provider rows they change (``FOR UPDATE``; SQLite already
serialises writers with ``BEGIN IMMEDIATE``) and check generations and
capacity against the database inside the transaction: nothing here trusts
the in-memory summaries of ``kova.placement.cache``.
"""
