"""Cluster AI: turn a list of machines into one self-hosted AI cluster."""

__version__ = "0.1.0"
