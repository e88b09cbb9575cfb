"""What every stored artefact shares: its sha256, checked once per process, the error
that says what is wrong and how to fix it, and the safe-mode Keras loader."""

from __future__ import annotations

import hashlib
from pathlib import Path


class BundleError(RuntimeError):
    """A bundle that cannot be used, with what is wrong and how to fix it."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Files already hashed in this process, by (path, size, modification time, expected
# sha256): the app checks a bundle when it lists it and again when it loads the model,
# and a 10-MB model need not be read twice. Any change to the file changes the key.
_verified: set[tuple[str, int, int, str]] = set()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise BundleError unless `path` exists and hashes to `expected` (once per process
    for an unchanged file)."""
    if not path.is_file():
        raise BundleError(f"{path} is missing: the bundle is incomplete. Restore it from the repository.")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, expected)
    if key in _verified:
        return
    actual = sha256_file(path)
    if actual == expected:
        _verified.add(key)
    else:
        raise BundleError(
            f"{path} does not match its manifest (sha256 {actual[:12]}… instead of "
            f"{expected[:12]}…): the file was changed or damaged. Restore it from "
            "the repository; do not use it."
        )


def load_keras_model(path: Path):
    import keras  # deferred: reading manifests and predictions must not need TensorFlow

    # Registers the project's own layers (ShadesOfGrey), which safe mode loads by name.
    import medal_core.modeling.colour  # noqa: F401

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad archive; all mean "unusable"
        raise BundleError(f"{path} could not be loaded safely: {error}") from error
