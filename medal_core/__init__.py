"""MedAL Triage core: data, models, training, evaluation and inference, with no UI."""
