"""Prune Explorer: explore weight pruning of small language models."""
