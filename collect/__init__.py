"""weightcast stage: collect."""
