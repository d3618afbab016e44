"""The train stage's library: the loop, the frozen-block cache, checkpoints, zero-shot."""
