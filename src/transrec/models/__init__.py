"""Recommender models: item encoders, user encoders and the non-learned baselines."""
