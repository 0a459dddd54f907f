"""weightcast stage: eval."""
