"""The stages that make a bundle, each a CLI under `python -m medal_core`: `train`,
`calibrate`, `evaluate`, `fit_ood`, `fit_modality`."""
