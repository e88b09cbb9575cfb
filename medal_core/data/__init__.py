"""Data: datasets and their metadata (`datasets`), which image plays which role
(`roles`), the one image decoder for training and uploads (`intake`), and the training
pipelines (`pipeline`)."""
