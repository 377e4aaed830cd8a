"""Plans you can take away: recipes (the whole pruning choice in one validated YAML file), applying them, and
exports (a transformers folder, bit-packed masks, an llm-compressor recipe, sizes on disk)."""
