"""Models: the architectures (`architectures`), batch-norm folding for inference
(`folding`) and the compiled multi-view forward pass (`runner`)."""
