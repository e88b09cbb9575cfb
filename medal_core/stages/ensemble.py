"""Ensemble stage: merge trained bundles into one bundle whose logit is their mean.

    python -m medal_core ensemble --member models/mobilenet --member models/mobilenetv2 \\
        --data-root ../shared/data --threshold-on isic2017 --out models/ensemble

The members must have the same images in every role (so that no member saw the
ensemble's selection, calibration or report images) and be architectures of
`architectures.ENSEMBLE_MEMBERS` that can share one graph (`ensemble_problem`): different
ones, or two runs of one. They may differ in how often each source was drawn (e.g. a
second stage, `train --init-from`). The merged model is one flat graph
(`modeling.ensembling.merge_members`); its Grad-CAM layer holds the members' last maps.

The selection set makes the ensemble choice: the stage prints and records the selection
ROC AUC of each member and of the ensemble (their test-time views, every selection image),
and refuses to write an ensemble that does not beat every member there, unless told
with `--keep-if-not-better`. Then, as after training, the calibration set fits the
temperature and sets the threshold, and the report set, which chose nothing, is scored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medal_core.bundles import bundle as bundles
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.evaluation import metrics
from medal_core.modeling import architectures as models

if TYPE_CHECKING:  # for the annotations only; the stage imports it when it runs
    from medal_core.modeling.runner import ModelRunner


class EnsembleError(RuntimeError):
    """Members that cannot be merged, or an ensemble its selection set does not choose."""


def check_members(members: list[bundles.Bundle]) -> list[str]:
    """The members' architectures, after checking that they can form one ensemble: the
    same images in every role, input size and test-time views, and no model twice (an
    architecture may come twice, as two runs of it). Raises EnsembleError saying what
    differs."""
    if len(members) < 2:
        raise EnsembleError("an ensemble needs at least two --member bundles")
    first = members[0].manifest
    for member in members[1:]:
        manifest = member.manifest
        for key in ("input_size", "test_time_views"):
            if manifest[key] != first[key]:
                raise EnsembleError(
                    f"'{member.name}' has {key} {manifest[key]}, '{members[0].name}' {first[key]}"
                )
        differ = roles.differing_roles(manifest["data"]["roles"], first["data"]["roles"])
        if differ:
            raise EnsembleError(
                f"'{member.name}' and '{members[0].name}' have different {', '.join(differ)} images: "
                "a member could have trained on the ensemble's selection, calibration or report images"
            )
    # Two runs of one architecture may be members, one model twice may not (it would
    # only cost twice the compute).
    holder_of: dict[str, str] = {}  # model sha256 -> the first member holding it
    for member in members:
        model_hash = member.manifest["model_sha256"]
        if model_hash in holder_of:
            raise EnsembleError(
                f"'{member.name}' holds the same model as '{holder_of[model_hash]}': the members must differ"
            )
        holder_of[model_hash] = member.name
    archs = [m.manifest["architecture"] for m in members]
    problem = models.ensemble_problem(archs)
    if problem:
        raise EnsembleError(problem)
    return archs


def selection_aucs(
    runners: dict[str, ModelRunner], selection: data.Dataset, views: int
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """ROC AUC of each named `ModelRunner` on the selection images with `views` test-time
    views, and the logits (n,) behind them (to check the ensemble against its members)."""
    from medal_core.stages.evaluate import mean_logits

    size = next(iter(runners.values())).input_size
    images = data.load_images(selection.paths, size)
    logits = {name: mean_logits(runner, images, views) for name, runner in runners.items()}
    return {name: metrics.roc_auc(selection.labels, values) for name, values in logits.items()}, logits


def build_ensemble_bundle(
    member_folders: list[str | Path],
    out: str | Path,
    data_root: str | Path,
    threshold_sources: tuple[str, ...] = (),
    keep_if_not_better: bool = False,
) -> Path:
    """Merge the bundles in `member_folders` and write the ensemble bundle to `out`."""
    from medal_core.modeling import ensembling
    from medal_core.modeling.runner import ModelRunner
    from medal_core.stages.train import save_calibrated_bundle

    members = [bundles.load_bundle(folder, load_screen_too=False) for folder in member_folders]
    archs = check_members(members)
    assignment = roles.bundle_roles(members[0].manifest, data_root)
    model = ensembling.merge_members([m.model for m in members], archs)
    views = members[0].manifest["test_time_views"]

    # Keyed by architecture, numbered for a second member of one (folder names need not
    # differ).
    keys = models.member_keys(archs)
    runners = {key: ModelRunner(m.model) for key, m in zip(keys, members)}
    runners[models.ENSEMBLE] = ModelRunner(model)
    aucs, logits = selection_aucs(runners, assignment.role("selection"), views)
    mean_of_members = np.mean([logits[key] for key in keys], axis=0)
    # The merge is exact up to float rounding; anything more is a wrong weight copy.
    worst = float(np.max(np.abs(logits[models.ENSEMBLE] - mean_of_members)))
    if worst > 1e-3:
        raise EnsembleError(f"the merged model's logits differ from the members' mean by {worst:.2g}")
    for name, auc in aucs.items():
        print(f"selection ROC AUC ({views} views) {name:<14} {auc:.4f}", flush=True)
    best_member = max(aucs[key] for key in keys)
    if aucs[models.ENSEMBLE] <= best_member and not keep_if_not_better:
        raise EnsembleError(
            f"the ensemble's selection AUC {aucs[models.ENSEMBLE]:.4f} does not beat its best member's "
            f"{best_member:.4f}: not written (--keep-if-not-better writes it anyway)"
        )
    notes = "; ".join(f"{m.name}: {m.manifest['backbone_weights'].get('note', '?')}" for m in members)
    about = {
        "architecture": models.ENSEMBLE,
        "backbone_weights": {
            "source": "members",
            "note": f"the trained weights of its members ({notes})",
            "members": [m.manifest["backbone_weights"] for m in members],
        },
        "gradcam_layer": models.ENSEMBLE_MAPS,
        "ensemble": {
            "method": "mean of the members' logits, in one flat graph",
            "members": [
                {
                    "name": m.name,
                    "key": key,  # its entry in selection_roc_auc
                    "architecture": arch,
                    "model_sha256": m.manifest["model_sha256"],
                    "logit_offset": m.logit_offset,
                    "training": m.manifest.get("training"),
                    "report_roc_auc": m.manifest.get("report_metrics", {}).get("roc_auc"),
                }
                for key, arch, m in zip(keys, archs, members)
            ],
            "selection_roc_auc": aucs,  # by member key, and "ensemble"
            "selection_views": views,
            "max_logit_difference_from_members_mean": worst,
        },
        "training": {"note": "not trained: merged from its members' bundles (see `ensemble`)"},
    }
    # The mean logit carries the mean of the members' class-weighting offsets (the mean
    # is linear), so removing that mean gives the mean of their offset-free logits.
    logit_offset = float(np.mean([m.logit_offset for m in members]))
    return save_calibrated_bundle(
        model,
        out,
        about,
        assignment,
        logit_offset,
        views,
        threshold_sources=threshold_sources,
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--member", action="append", required=True, help="a member bundle (give two or more)")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. models/ensemble")
    parser.add_argument("--data-root", required=True, help="the folder holding the members' datasets")
    parser.add_argument(
        "--threshold-on",
        action="append",
        default=[],
        metavar="SOURCE",
        help="choose the threshold on the calibration images of this dataset only (repeatable)",
    )
    parser.add_argument(
        "--keep-if-not-better",
        action="store_true",
        help="write the ensemble even if its selection AUC does not beat every member's",
    )
    args = parser.parse_args(argv)
    try:
        out = build_ensemble_bundle(
            args.member, args.out, args.data_root, tuple(args.threshold_on), args.keep_if_not_better
        )
    except (EnsembleError, bundles.BundleError, data.DatasetError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"bundle written to {out}")


if __name__ == "__main__":
    main()
