"""Embeddings, the Qdrant store, ingestion, and the search API and UI."""
