"""ray_jobs: a Ray Data processor for LLM training corpora (clean, dedup, split, tokenize)."""

__version__ = "0.1.0"
