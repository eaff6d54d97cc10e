"""Training and updating Core ML models."""
