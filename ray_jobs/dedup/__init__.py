"""Deduplication: exact (hash of the normalised text), MinHash-LSH near dedup, cross-split leakage."""
