"""Code shared by the tests and the benchmarks: tiny models and tokenizers, masks, and AppTest helpers.

Nothing here is a test; test modules import from here, never from ``conftest`` or from each other.
"""
