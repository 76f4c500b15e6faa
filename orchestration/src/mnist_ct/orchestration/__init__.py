"""mnist_ct.orchestration: the KFP v2 pipeline, compile, release and the local runner."""
