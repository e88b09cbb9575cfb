"""MedAL Triage core: the ML system only, with no UI.

Floors, lowest first (a module imports only from its own floor or those below; the
test `tests/test_layers.py` checks it):

    data, evaluation, modeling  →  screening  →  bundles  →  serving, explain  →  stages

`python -m medal_core --help` lists the commands (train, calibrate, evaluate,
fit-screening, serve, batch).
"""

__version__ = "0.6.0"  # the app's version, printed on every case report
