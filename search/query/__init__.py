"""Queries: kinds, parsing, retrievers, fusion, paging, caches, the floor and results."""
