"""Answering for images: the result object (`prediction`, no TensorFlow), the loaded
predictor (`predictor`), the HTTP service (`service`, `ray_serve`) and archive-scale
batch scoring (`batch`)."""
