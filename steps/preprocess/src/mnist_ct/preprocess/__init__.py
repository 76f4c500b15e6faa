"""mnist-ct preprocess step: collect a digit data set and publish it as checksummed train/test splits."""
