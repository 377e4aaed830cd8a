"""How a pruned layer runs: CSR, 2:4 semi-structured and auto backends swapped into a session's model,
and structured compaction."""
