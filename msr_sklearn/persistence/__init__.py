"""Files: how learned symmetries and training checkpoints are written and read safely."""
