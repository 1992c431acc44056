"""Vectors: FAISS index versions on disk, the live index, filtered search, near-duplicates."""
