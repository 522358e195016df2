"""Tokenization: tokenizer loading and the batched tokenize stage (packing and chat templates come next)."""
