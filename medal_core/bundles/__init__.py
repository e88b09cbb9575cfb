"""Model bundles on disk: the model, its manifest, its stored checks and predictions,
written, verified (sha256) and loaded (`bundle`)."""
