"""An incident store in MongoDB collections of a test's own, dropped afterwards (integration and browser tests)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pymongo import AsyncMongoClient

from knowledge.incident_store import IncidentStore


@asynccontextmanager
async def scratch_incident_store(mongo_url: str) -> AsyncIterator[IncidentStore]:
    client: AsyncMongoClient = AsyncMongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    database = client["opswarm_tests"]
    name = f"incidents_{uuid.uuid4().hex[:8]}"
    store = IncidentStore.in_database(database, name)
    await store.ensure_indexes()
    try:
        yield store
    finally:
        await database[name].drop()
        await database[f"{name}_versions"].drop()
        await client.close()
