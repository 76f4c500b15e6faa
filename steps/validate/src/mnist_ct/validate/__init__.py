"""mnist-ct validate step: check a data set before anything trains on it, and report every check."""
