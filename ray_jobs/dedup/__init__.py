"""Deduplication: exact (hash of the normalised text) now; MinHash-LSH near-dedup builds on the same shape."""
