"""Label errors: out-of-fold probabilities from a simple model (model.py), confident learning (detect.py)."""
