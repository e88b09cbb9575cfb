"""Selection-set ROC AUC of each given bundle and of the mean logit of every pair (and,
with `--up-to 3`, every triple) of them: the rule a flat ensemble applies, scored before
any ensemble is built, so that `python -m medal_core ensemble` is run only on the
candidate the selection set prefers. Prints figures only; it asserts nothing and writes
nothing.

    python bench/ensemble_candidates.py --bundle models/mobilenetv2_cc \
        --bundle models/mobilenetv2 --bundle runs/mobilenetv2_cc_seed13 \
        --data-root ../shared/data

The bundles must be able to form one ensemble (`stages.ensemble.check_members`: the same
images in every role, input size and views; the selection images are rebuilt from the
first one's manifest). Only the selection set is read: the calibration and report sets
are not touched.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.data import roles  # noqa: E402
from medal_core.evaluation import metrics  # noqa: E402
from medal_core.modeling.runner import ModelRunner  # noqa: E402
from medal_core.stages.ensemble import EnsembleError, check_members, selection_aucs  # noqa: E402


def combination_aucs(labels: np.ndarray, logits: dict[str, np.ndarray], up_to: int) -> dict[str, float]:
    """ROC AUC of the mean logit of every combination of 2..`up_to` of `logits` (name →
    (n,) logits), keyed "a + b"."""
    return {
        " + ".join(names): metrics.roc_auc(labels, np.mean([logits[n] for n in names], axis=0))
        for size in range(2, up_to + 1)
        for names in itertools.combinations(logits, size)
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="a bundle folder (two or more)")
    parser.add_argument("--data-root", required=True, help="the folder holding the datasets")
    parser.add_argument("--up-to", type=int, default=2, choices=(2, 3), help="largest combination scored")
    args = parser.parse_args(argv)
    if len(args.bundle) < 2:
        parser.error("give at least two --bundle folders")

    loaded = [bundles.load_bundle(folder, load_screen_too=False) for folder in args.bundle]
    names = [Path(folder).name for folder in args.bundle]
    try:  # the ensemble stage's own checks: same roles, input size and views; compatible backbones
        check_members(loaded)
    except EnsembleError as error:
        parser.error(str(error))
    views = loaded[0].manifest["test_time_views"]
    selection = roles.bundle_roles(loaded[0].manifest, args.data_root).role("selection")
    runners = {name: ModelRunner(b.model) for name, b in zip(names, loaded)}
    aucs, logits = selection_aucs(runners, selection, views)
    melanomas = int(selection.labels.sum())
    print(f"selection set: {len(selection.labels)} images, {melanomas} melanomas, {views} views")
    for name, auc in {**aucs, **combination_aucs(selection.labels, logits, args.up_to)}.items():
        print(f"  {name:<60} ROC AUC {auc:.4f}")


if __name__ == "__main__":
    main()
