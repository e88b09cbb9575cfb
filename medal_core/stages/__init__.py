"""The stages that make a bundle, each a CLI under `python -m medal_core`: `train`,
`calibrate`, `evaluate`, and `fit_screening` (the screen every bundle shares)."""
