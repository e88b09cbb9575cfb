"""MedAL Triage core: data, models, training, evaluation and inference, with no UI."""

__version__ = "0.4.0"   # the app's version, printed on every case report
