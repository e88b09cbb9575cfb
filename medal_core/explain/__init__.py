"""Why the model said what it said: Grad-CAM and activation maps (`gradcam`), and
their drawing (`overlay`)."""
