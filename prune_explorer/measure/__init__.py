"""What pruning did: perplexity, generated text and next-token probabilities, speed, sizes, sweeps."""
