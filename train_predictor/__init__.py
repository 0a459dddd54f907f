"""weightcast stage: train_predictor."""
