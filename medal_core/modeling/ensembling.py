"""Merge trained models into one flat ensemble graph whose logit is the mean of theirs,
or average their weights (`mean_weights`).

The members are trained on their own (`python -m medal_core train`); merging copies
each backbone's weights, layer by layer, into `architectures.build_ensemble`'s graph and
writes a `logit` layer that averages the members' logits. Nothing is fitted here: the
ensemble is the members' mean, and a calibration stage then fits its temperature and
threshold like any bundle's (`medal_core.stages.ensemble`).
"""

from __future__ import annotations

import keras
import numpy as np

from medal_core.modeling import architectures as models


def merge_members(members: list[keras.Model], archs: list[str]) -> keras.Model:
    """The ensemble of `members` (trained models built by `architectures.build_model` for
    `archs`, one per member, all of one input size; an architecture may come twice, e.g.
    two runs of it): its logit is the mean of theirs.

    Raises ValueError when a member's layers do not fit its architecture's backbone
    (another alpha or input size), so a mismatch can never pass silently.
    """
    if len(members) != len(archs):
        raise ValueError(f"{len(members)} members but {len(archs)} architectures")
    sizes = {int(m.input_shape[1]) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"the members take different input sizes: {sorted(sizes)}")
    ensemble = models.build_ensemble(archs, sizes.pop())
    copied: set[str] = set()
    for member, prefix in zip(members, models.member_prefixes(archs)):
        for layer in member.layers:
            # The input, its scaling and the pooling have no weights and the same names
            # in every member; the logit is merged below. Other layers without weights
            # (DenseNet's padding) may carry names Keras numbered as they were built.
            if not models.is_backbone_layer(layer) or not layer.weights:
                continue
            name = prefix + layer.name  # its name in the ensemble's graph
            try:
                target = ensemble.get_layer(name)
            except ValueError:
                raise ValueError(
                    f"layer '{layer.name}' of member '{member.name}' has no place in the ensemble"
                ) from None
            if name in copied:
                raise ValueError(f"two members have a layer named '{name}'")
            target.set_weights(layer.get_weights())  # raises on a shape mismatch
            copied.add(name)
    missing = [
        layer.name
        for layer in ensemble.layers
        if layer.weights and layer.name not in copied and models.is_backbone_layer(layer)
    ]
    if missing:
        raise ValueError(f"no member supplied the weights of {missing[:5]} ({len(missing)} layers)")
    ensemble.get_layer(models.LOGIT_LAYER).set_weights(mean_logit_weights(members))
    return ensemble


def mean_logit_weights(members: list[keras.Model]) -> list[np.ndarray]:
    """[kernel (Σd, 1), bias (1,)] of a Dense layer over the members' pooled features side
    by side that computes the mean of their logits: each kernel divided by the number of
    members, stacked in member order, and the mean bias."""
    kernels, biases = zip(*(m.get_layer(models.LOGIT_LAYER).get_weights() for m in members))
    k = len(members)
    return [np.concatenate(kernels, axis=0) / k, np.mean(biases, axis=0)]


def mean_weights(weight_sets: list[list[np.ndarray]]) -> list[np.ndarray]:
    """The element-wise mean (float32) of several models' `get_weights()` lists, all of
    one architecture: stochastic weight averaging over one run's late epochs (Izmailov
    et al., 2018), whose mean lies nearer the centre of a wide optimum than any one of
    them, or a "model soup" of runs from one starting point. Batch-norm statistics are
    averaged too, which is exact only when they did not move (frozen, as in fine-tuning
    here)."""
    if not weight_sets:
        raise ValueError("no weights to average")
    stacked = (np.stack(same_weight) for same_weight in zip(*weight_sets))
    return [np.asarray(np.mean(values, axis=0, dtype=np.float64), np.float32) for values in stacked]
