"""Batch latency predictor: LightGBM trained on measured engine steps."""
