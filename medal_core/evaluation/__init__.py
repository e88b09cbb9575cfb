"""Evaluation, as pure functions of labels and probabilities: metrics with confidence
intervals (`metrics`), the app's decision policy (`decision`) and the figures reported
for a set (`figures`). Imports no TensorFlow."""
