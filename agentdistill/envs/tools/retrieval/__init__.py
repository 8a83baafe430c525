"""Retrieval tools: corpora, indexes and the search tool agents call."""
