"""Train a model on a labelled dataset and write a model bundle.

    python -m medal_core train --arch mobilenet --recipe recipes/dermoscopic.json \\
        --data-root ../shared/data \\
        --weights ../shared/weights/mobilenet_0.75_224_no_top_imagenet.weights.h5 \\
        --out models/mobilenet

The data come from a recipe (`medal_core.data.roles`): each image has one role. Training
images fit the weights, the selection set stops training early, the calibration set
fits the temperature and sets the threshold (and the shared screen's limits, in
`fit-screening`), and the report set,
which chose nothing, gives the figures stored in the bundle (`report_predictions.csv`).
`--data DIR` (repeatable) instead of a recipe splits each folder 70/10/10/10 by lesion.

Transfer models train in two phases: the head alone on a frozen backbone, then the whole
network with the backbone at a lower learning rate than the head (batch-norm statistics
stay frozen). Both phases stop early on validation ROC AUC and keep the best weights.
Every epoch is checkpointed under `OUT/checkpoints`: run the same command again after an
interruption and training resumes where it stopped; a finished run goes straight to
writing the bundle. The checkpoints carry a fingerprint of the configuration and of the
training and selection images: resuming with another configuration or other data is
refused, never silently continued.

`--init-from BUNDLE` starts from a trained bundle's weights instead (same architecture
and roles, checked), for a second stage on another mix of the training images, e.g.
`recipes/isic2017_second_stage.json` with `--head-epochs 0`, or at another `--input-size`.

`--cutmix P` pastes, with probability P per training image, a box of another image of
its batch in (CutMix); its loss is the area-weighted mix of the two images' losses.

`--average-last N` keeps every fine-tuning epoch's weights and, at the end, scores the
mean of the last N (stochastic weight averaging) against the best epoch on the selection
set with the bundle's test-time views; the better is kept and the manifest says which.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, cast

import keras
import numpy as np
import tensorflow as tf

from medal_core.bundles import bundle
from medal_core.data import datasets as data
from medal_core.data import pipeline, roles
from medal_core.evaluation import figures, metrics
from medal_core.modeling import architectures as models
from medal_core.modeling import ensembling
from medal_core.modeling.runner import ModelRunner
from medal_core.stages import calibrate, evaluate

# Settings that do not change what a run computes: they may differ on resume.
RESUMABLE_SETTINGS = ("out", "max_minutes")
# Settings added after runs were fingerprinted: left out at their default, so that those
# runs can still be resumed.
LATER_SETTINGS = {"average_last": 0, "cutmix": 0.0}
FINETUNE = "finetune"  # the phase whose epochs `--average-last` averages
EPOCH_WEIGHTS = "epoch_{:03d}.weights.h5"
FINGERPRINT_FILE = "fingerprint.json"


class TrainingError(RuntimeError):
    """A training run that cannot go ahead, with what to do instead."""


@dataclass
class TrainConfig:
    arch: str
    out: str
    data: list[str] = field(default_factory=list)  # dataset folders (default recipe)
    recipe: str | None = None  # or a JSON recipe (medal_core.data.roles)
    data_root: str = "."  # where the recipe's datasets are
    weights: str | None = None
    init_from: str | None = None  # a bundle of the same architecture and roles to go on from
    input_size: int | None = None
    batch_size: int = 32
    head_epochs: int = 3
    epochs: int = 30
    head_lr: float = 1e-3
    backbone_lr: float = 5e-5
    label_smoothing: float = 0.0
    cutmix: float = 0.0  # probability per training image of a CutMix box (0: none)
    patience: int = 6
    max_minutes: float | None = None
    test_time_views: int = 8
    seed: int = 42
    average_last: int = 0  # >0: also try the mean of the last N fine-tuning epochs' weights

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):  # one folder given as a plain path
            self.data = [str(self.data)]

    def recipe_object(self) -> roles.Recipe:
        if self.recipe:
            return roles.read_recipe(self.recipe)
        if not self.data:
            raise TrainingError("give the data: --recipe FILE (with --data-root) or --data DIR")
        return roles.default_recipe(list(self.data), self.seed)


class TwoRateTrainer(keras.Model):
    """Wraps a model for training only, so that the backbone's variables are updated by
    their own (slower) optimizer and the head's by the compiled one."""

    def __init__(self, model: keras.Model, backbone_optimizer: keras.optimizers.Optimizer):
        super().__init__(name="trainer")
        self.model = model
        self.backbone_optimizer = backbone_optimizer
        backbone_ids = {
            id(v)
            for layer in model.layers
            if models.is_backbone_layer(layer)
            for v in layer.trainable_variables
        }
        self._is_backbone = [id(v) in backbone_ids for v in model.trainable_variables]
        if any(self._is_backbone):
            backbone_optimizer.build(self._split(model.trainable_variables)[1])

    def _split(self, values):
        head = [v for v, bb in zip(values, self._is_backbone) if not bb]
        backbone = [v for v, bb in zip(values, self._is_backbone) if bb]
        return head, backbone

    def compile(self, optimizer, **kwargs):
        super().compile(optimizer=optimizer, **kwargs)
        # Built now on the head's variables only: BackupAndRestore would otherwise build
        # it on every trainable variable, and a resumed run could not load its state.
        self.optimizer.build(self._split(self.model.trainable_variables)[0])

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def train_step(self, batch):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
        variables = self.model.trainable_variables
        head_grads, backbone_grads = self._split(tape.gradient(loss, variables))
        head_vars, backbone_vars = self._split(variables)
        self.optimizer.apply(head_grads, head_vars)
        if backbone_vars:
            self.backbone_optimizer.apply(backbone_grads, backbone_vars)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}


class KeepBestWeights(keras.callbacks.Callback):
    """Early stopping on a validation metric that keeps the best weights on disk, with
    its state in a JSON file, so that it survives an interrupted and resumed run."""

    def __init__(
        self,
        model: keras.Model,
        folder: Path,
        monitor: str = "val_auc",
        patience: int = 6,
        max_seconds: float | None = None,
    ):
        super().__init__()
        self.inner_model = model
        self.weights_path = folder / "best.weights.h5"
        self.state_path = folder / "best.json"
        self.monitor, self.patience, self.max_seconds = monitor, patience, max_seconds
        self.state = (
            json.loads(self.state_path.read_text())
            if self.state_path.exists()
            else {"best": -np.inf, "best_epoch": -1, "wait": 0, "seconds": 0.0}
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        score = float(logs[self.monitor])
        self.state["seconds"] += time.monotonic() - self._epoch_start
        if score > self.state["best"]:
            self.state.update(best=score, best_epoch=epoch, wait=0)
            self.inner_model.save_weights(self.weights_path)
        else:
            self.state["wait"] += 1
        self.state_path.write_text(json.dumps(self.state))
        out_of_time = self.max_seconds is not None and self.state["seconds"] > self.max_seconds
        if self.state["wait"] >= self.patience or out_of_time:
            self.model.stop_training = True

    def restore_best(self) -> None:
        if self.weights_path.exists():
            self.inner_model.load_weights(self.weights_path)


class KeepEveryEpoch(keras.callbacks.Callback):
    """Saves the weights after every epoch as `folder/epoch_NNN.weights.h5` (NNN from
    0), for weight averaging; on disk so that a resumed run still has them all."""

    def __init__(self, model: keras.Model, folder: Path):
        super().__init__()
        self.inner_model, self.folder = model, folder

    def on_epoch_end(self, epoch, logs=None):
        self.inner_model.save_weights(self.folder / EPOCH_WEIGHTS.format(epoch))


def epoch_weight_files(folder: Path) -> list[Path]:
    """The per-epoch weight files `KeepEveryEpoch` wrote in `folder`, in epoch order."""
    return sorted(folder.glob("epoch_*.weights.h5"), key=epoch_of)


def epoch_of(path: Path) -> int:
    """The epoch (from 0) of a file named by `EPOCH_WEIGHTS`."""
    return int(path.name.split(".")[0].removeprefix("epoch_"))


def last_epochs(folder: Path, last: int) -> list[Path]:
    """The weight files of the last `last` epochs in `folder` (all of them if fewer ran),
    which must be consecutive: a gap would average other epochs than asked for."""
    files = epoch_weight_files(folder)[-last:]
    epochs = [epoch_of(f) for f in files]
    if not files:
        raise TrainingError(f"no epoch weights in {folder} to average")
    if epochs != list(range(epochs[0], epochs[0] + len(epochs))):
        raise TrainingError(f"the epoch weights in {folder} skip epochs ({epochs}): cannot average them")
    return files


def average_weights(model: keras.Model, files: list[Path]) -> list[np.ndarray]:
    """`ensembling.mean_weights` of the weights saved in `files`, each loaded into `model`
    (which is left holding the last), in `model.get_weights()` order."""
    if not files:
        raise TrainingError("no weights to average")
    weight_sets = []
    for path in files:
        model.load_weights(path)
        weight_sets.append(model.get_weights())
    return ensembling.mean_weights(weight_sets)


def class_weights(labels: np.ndarray, draw_probability: np.ndarray | None = None) -> dict[int, float]:
    """Weights inversely proportional to class frequency, averaging 1 over the data.

    With `draw_probability` (n,), the frequencies are those of an average epoch, in
    which image i takes part with that probability.
    """
    draw = np.ones(len(labels)) if draw_probability is None else np.asarray(draw_probability)
    counts = np.array([draw[labels == c].sum() for c in (0, 1)])
    return {c: float(counts.sum() / (2 * counts[c])) for c in (0, 1)}


def run_fingerprint(config: TrainConfig, assignment: roles.RoleAssignment) -> dict:
    """What a run's checkpoints belong to: the settings that shape the weights and the
    exact training and selection images (sha256 of their sorted ids)."""
    settings = {
        k: v
        for k, v in asdict(config).items()
        if k not in RESUMABLE_SETTINGS and not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])
    }
    if config.init_from:  # the weights it starts from, not only where they were
        settings["init_from_model_sha256"] = bundle.read_manifest(config.init_from)["model_sha256"]
    summary = assignment.summary()
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return {
        "config": settings,
        "config_sha256": digest,
        "train_ids_sha256": summary["train"]["ids_sha256"],
        "selection_ids_sha256": summary["selection"]["ids_sha256"],
    }


def check_fingerprint(work: Path, fingerprint: dict) -> None:
    """Record the run's fingerprint in a fresh `work` folder, or refuse to resume one
    that holds checkpoints of another run."""
    path = work / FINGERPRINT_FILE
    has_checkpoints = work.is_dir() and any(p.name != FINGERPRINT_FILE for p in work.iterdir())
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored == fingerprint:
            return
        changed = sorted(
            k
            for k in set(stored["config"]) | set(fingerprint["config"])
            if stored["config"].get(k) != fingerprint["config"].get(k)
        )
        changed = [f"{k}: {stored['config'].get(k)!r} -> {fingerprint['config'].get(k)!r}" for k in changed]
        for key in ("train_ids_sha256", "selection_ids_sha256"):
            if stored.get(key) != fingerprint[key]:
                changed.append(f"the {key.split('_')[0]} images differ")
        raise TrainingError(
            f"{work} holds checkpoints of another run ({'; '.join(changed)}). Resuming would "
            f"mix its weights into this one: train into another --out, or delete {work} to "
            "start this run from scratch."
        )
    if has_checkpoints:
        raise TrainingError(
            f"{work} holds checkpoints with no fingerprint (from an older version): their "
            f"run cannot be checked. Train into another --out, or delete {work}."
        )
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fingerprint, indent=2))


@dataclass(frozen=True)
class Phase:
    """One fit() of a run: its name (the checkpoint folder), epochs and learning rates."""

    name: str
    epochs: int
    head_lr: float
    backbone_lr: float | None  # None: the backbone is frozen (or the model has none)


def training_phases(config: TrainConfig, is_transfer: bool) -> list[Phase]:
    """A transfer model fits its head on the frozen backbone (no head phase with
    `--head-epochs 0`, e.g. after `--init-from`), then fine-tunes everything, the head,
    already fitted, at a tenth of its first rate. A model from scratch has one phase."""
    if not is_transfer:
        return [Phase("scratch", config.epochs, config.head_lr, None)]
    head = [Phase("head", config.head_epochs, config.head_lr, None)] if config.head_epochs else []
    return [*head, Phase(FINETUNE, config.epochs, config.head_lr / 10, config.backbone_lr)]


def run_phase(
    name: str,
    model: keras.Model,
    train_ds,
    val_ds,
    config: TrainConfig,
    epochs: int,
    head_lr: float,
    backbone_lr: float | None,
    work: Path,
    steps_per_epoch: int,
    max_seconds: float | None,
    keep_every_epoch: bool = False,
) -> float:
    """One fit() call, resumable: skipped if `work/name/done` exists. Returns the
    seconds of training the phase took. With `keep_every_epoch`, each epoch's weights
    are kept as well (`KeepEveryEpoch`)."""
    folder = work / name
    if (folder / "done").exists():
        print(f"[{name}] already finished; loading its best weights", flush=True)
        model.load_weights(folder / "best.weights.h5")
        return json.loads((folder / "done").read_text())["seconds"]
    folder.mkdir(parents=True, exist_ok=True)
    steps = epochs * steps_per_epoch

    def schedule(lr):
        return keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)

    trainer = TwoRateTrainer(model, keras.optimizers.Adam(schedule(backbone_lr or head_lr)))
    trainer.compile(
        optimizer=keras.optimizers.Adam(schedule(head_lr)),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    trainer.build((None, *model.input_shape[1:]))
    keeper = KeepBestWeights(model, folder, patience=config.patience, max_seconds=max_seconds)
    print(
        f"[{name}] up to {epochs} epochs, head lr {head_lr:g}, backbone lr "
        f"{backbone_lr if backbone_lr else 'frozen'}",
        flush=True,
    )
    callbacks: list[keras.callbacks.Callback] = [keeper]
    if keep_every_epoch:
        callbacks.append(KeepEveryEpoch(model, folder))
    callbacks += [
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(work / "tensorboard" / name)),
        # Last: an epoch counts as done only once the others have saved what it made, so
        # a run killed in between redoes it instead of resuming without its files.
        keras.callbacks.BackupAndRestore(str(folder / "backup")),
    ]
    trainer.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=2, callbacks=callbacks)
    keeper.restore_best()
    (folder / "done").write_text(json.dumps(keeper.state))
    return keeper.state["seconds"]


def train(config: TrainConfig) -> Path:
    """Train `config.arch` and write the bundle to `config.out`; returns its folder."""
    keras.utils.set_random_seed(config.seed)
    spec = models.ARCHITECTURES[config.arch]
    size = config.input_size or spec.default_input_size
    out = Path(config.out)
    work = out / "checkpoints"

    if config.init_from and config.weights not in (None, "none"):
        raise TrainingError("give --weights or --init-from, not both: --init-from brings its own weights")
    if config.average_last < 0 or config.average_last == 1:
        raise TrainingError(
            f"--average-last {config.average_last}: give 0 (no averaging) or 2 or more epochs"
        )
    if not 0.0 <= config.cutmix <= 1.0:
        raise TrainingError(f"--cutmix {config.cutmix}: give a probability per image, 0-1 (0: none)")
    if config.average_last and not spec.is_transfer:
        raise TrainingError(
            f"--average-last needs frozen batch norms, i.e. a transfer architecture; {config.arch} "
            "trains its own, whose averaged statistics would not match the averaged weights"
        )
    assignment = roles.assign_roles(config.recipe_object(), config.data_root)
    check_fingerprint(work, run_fingerprint(config, assignment))
    (work / "config.json").write_text(json.dumps(asdict(config), indent=2))
    train_set, selection_set = assignment.role("train"), assignment.role("selection")
    for name in roles.ROLES:
        print(f"{name:<12} {data.Dataset.summary(assignment.role(name))}", flush=True)
    draw = assignment.weights_of("train")
    weights = class_weights(train_set.labels, draw)
    train_ds = pipeline.make_pipeline(
        train_set,
        size,
        config.batch_size,
        training=True,
        seed=config.seed,
        draw_probability=draw,
        sample_weights=np.array([weights[c] for c in train_set.labels]),
        cutmix=config.cutmix,
    )
    selection_ds = pipeline.make_pipeline(selection_set, size, 64)
    steps_per_epoch = pipeline.expected_batches(draw, config.batch_size)
    budget = config.max_minutes * 60 if config.max_minutes else None

    model = models.build_model(config.arch, size, config.weights)
    if config.init_from:
        start_from_bundle(model, config.arch, config.init_from, assignment)
    common = dict(
        train_ds=train_ds, val_ds=selection_ds, config=config, work=work, steps_per_epoch=steps_per_epoch
    )
    spent = 0.0
    for phase in training_phases(config, spec.is_transfer):
        if spec.is_transfer:
            models.set_backbone_trainable(model, phase.backbone_lr is not None)
        spent += run_phase(
            phase.name,
            model,
            epochs=phase.epochs,
            head_lr=phase.head_lr,
            backbone_lr=phase.backbone_lr,
            max_seconds=budget and budget - spent,
            keep_every_epoch=bool(config.average_last) and phase.backbone_lr is not None,
            **common,
        )
    averaging = None
    if config.average_last:
        images = data.load_images(selection_set.paths, size)

        def selection_auc(candidate: keras.Model) -> float:
            logits = evaluate.mean_logits(ModelRunner(candidate), images, config.test_time_views)
            return metrics.roc_auc(selection_set.labels, logits)

        files = last_epochs(work / FINETUNE, config.average_last)
        averaging = choose_weight_average(model, files, selection_auc)
        averaging.update(requested=config.average_last, views=config.test_time_views)
    return write_bundle(model, config, assignment, weights, work, averaging)


def choose_weight_average(
    model: keras.Model, files: list[Path], score: Callable[[keras.Model], float]
) -> dict:
    """Score the best epoch's weights (which `model` holds) and the mean of the weights
    in `files` with `score` (the selection set's ROC AUC), and leave `model` holding the
    better of the two (the best epoch on a tie). Returns both scores and the choice."""
    best_weights = model.get_weights()
    best_score = score(model)
    model.set_weights(average_weights(model, files))
    averaged_score = score(model)
    chosen = "average" if averaged_score > best_score else "best_epoch"
    if chosen == "best_epoch":
        model.set_weights(best_weights)
    print(
        f"selection ROC AUC: best epoch {best_score:.4f}, mean of the last {len(files)} "
        f"epochs {averaged_score:.4f}; keeping the {chosen.replace('_', ' ')}",
        flush=True,
    )
    return {
        "epochs_averaged": [epoch_of(f) for f in files],
        "selection_auc": {"best_epoch": best_score, "average": averaged_score},
        "chosen": chosen,
    }


def start_from_bundle(model: keras.Model, arch: str, folder: str, assignment: roles.RoleAssignment) -> None:
    """Load the weights of the bundle in `folder` into `model` (an `arch`), e.g. to
    fine-tune a model trained on every source on the app's own kind of images, or to go
    on at a higher resolution. Refused unless the bundle has the same architecture and
    was trained with exactly these roles, so that it never saw this run's selection,
    calibration or report images. The input size may differ: every architecture here
    pools its last maps globally, so no weight's shape depends on it."""
    source = bundle.load_bundle(folder, load_screen_too=False)
    manifest = source.manifest
    if manifest["architecture"] != arch:
        raise TrainingError(f"--init-from {folder} is a {manifest['architecture']}; this run trains a {arch}")
    differ = roles.differing_roles(manifest["data"]["roles"], assignment.summary())
    if differ:
        raise TrainingError(
            f"--init-from {folder} was trained with other {', '.join(differ)} images than "
            "this run's recipe gives: it may have seen this run's held-back images"
        )
    model.set_weights(cast(keras.Model, source.model).get_weights())
    print(
        f"starting from the weights of {folder} ({manifest['model_sha256'][:12]}, trained at "
        f"{manifest['input_size']} px; this run: {model.input_shape[1]} px)",
        flush=True,
    )


def role_logits(runner: ModelRunner, dataset: data.Dataset, views: int) -> np.ndarray:
    """Logits (n,) of a role's images, averaged over `views`."""
    images = data.load_images(dataset.paths, runner.input_size)
    return evaluate.mean_logits(runner, images, views=views)


def write_bundle(
    model: keras.Model,
    config: TrainConfig,
    assignment: roles.RoleAssignment,
    weights: dict[int, float],
    work: Path,
    weight_averaging: dict | None = None,
) -> Path:
    """Save the trained model as a bundle with what it is and how it was trained
    (`save_calibrated_bundle` fits its temperature and runs the calibration stage).
    `weight_averaging`: what `choose_weight_average` compared and kept, if it ran."""
    spec = models.ARCHITECTURES[config.arch]
    phases = {
        p.name: json.loads((p / "done").read_text()) for p in sorted(work.iterdir()) if (p / "done").exists()
    }
    about = {
        "architecture": config.arch,
        "backbone_weights": describe_weights(config.weights, spec.is_transfer, config.init_from),
        "gradcam_layer": spec.gradcam_layer,
        "training": {
            "config": asdict(config),
            "phases": phases,
            # The best epoch's 1-view score per phase (early stopping's); with weight
            # averaging, both candidates' scores with the bundle's views are below.
            "selection_auc": {p: s.get("best") for p, s in phases.items()},
            **({"weight_averaging": weight_averaging} if weight_averaging else {}),
        },
    }
    # Class weighting raises every logit by log(w1/w0); it is undone before fitting T, so
    # the probabilities shown are estimates at the data's own prevalence.
    logit_offset = float(np.log(weights[1] / weights[0]))
    return save_calibrated_bundle(
        model, config.out, about, assignment, logit_offset, config.test_time_views, work / "history.csv"
    )


def save_calibrated_bundle(
    model: keras.Model,
    out: str | Path,
    about: dict,
    assignment: roles.RoleAssignment,
    logit_offset: float,
    views: int,
    history_csv: Path | None = None,
    threshold_sources: tuple[str, ...] = (),
) -> Path:
    """Fit the temperature on the calibration set, save the bundle (`about`: the
    manifest's architecture, backbone_weights, gradcam_layer and how the model came to
    be), then run the calibration stage, which sets the decision policy and scores the
    report set (`calibrate.calibrate_bundle`, threshold chosen on `threshold_sources`)."""
    runner = ModelRunner(model)  # one folded, traced pass
    calibration_set = assignment.role("calibration")
    logits = role_logits(runner, calibration_set, views)
    temperature = metrics.fit_temperature(calibration_set.labels, logits - logit_offset)
    probabilities = bundle.calibrated_probability(logits, logit_offset, temperature)
    threshold = figures.operating_points(calibration_set.labels, probabilities)
    calibration_report = figures.evaluate_probabilities(
        calibration_set.labels, probabilities, threshold["value"]
    )
    calibration_report["calibration"] = figures.calibration_summary(
        calibration_set.labels, logits, temperature, logit_offset
    )
    name = Path(out).name
    print(figures.format_report(calibration_report, f"{name} on its calibration set"), flush=True)
    manifest = {
        "name": name,
        "input_size": int(model.input_shape[1]),
        "class_names": list(data.CLASS_NAMES),
        **about,
        "test_time_views": views,
        "logit_offset": logit_offset,
        "temperature": temperature,
        "threshold": {
            **threshold,
            "method": threshold["method"].replace("validation", "the calibration set"),
        },
        "parameters": int(model.count_params()),
        "data": {
            "recipe": assignment.recipe.as_dict(),
            "roles": assignment.summary(),
            "predictions_file": {
                "calibration": bundle.PREDICTIONS_FILE,
                "report": bundle.REPORT_PREDICTIONS_FILE,
            },
        },
        # "validation" in earlier bundles: the set the threshold was chosen on.
        "validation_metrics": calibration_report,  # rewritten by the calibration stage
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%d"),
    }
    folder = bundle.save_bundle(
        out, model, manifest, bundle.Predictions.of(calibration_set, logits, probabilities), history_csv
    )
    # Which images get an estimate is the shared screen's answer (models/screening, or one
    # beside `out`); calibrate records it and counts its refusals in the threshold.
    calibrate.calibrate_bundle(folder, assignment, threshold_sources)
    return folder


def describe_weights(weights: str | None, is_transfer: bool, init_from: str | None = None) -> dict:
    """Where the backbone's starting weights came from, for the manifest."""
    if init_from:
        earlier = bundle.read_manifest(init_from)
        return {
            "source": "bundle",
            "bundle": Path(init_from).name,
            "model_sha256": earlier["model_sha256"],
            "note": f"the trained weights of bundle '{Path(init_from).name}' "
            f"({earlier['backbone_weights'].get('note', '')})",
            "first": earlier["backbone_weights"],
        }
    if not is_transfer or weights is None or str(weights).lower() == "none":
        return {"source": "none", "note": "trained from random initialisation"}
    if str(weights) == "imagenet":
        return {"source": "imagenet", "note": "Keras Applications ImageNet weights (downloaded)"}
    return {
        "source": "file",
        "file": Path(weights).name,
        "sha256": bundle.sha256_file(weights),
        "note": "ImageNet-pretrained weights read from a local file",
    }


def library_versions() -> dict:
    import platform

    import PIL

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def parse_args(argv=None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", required=True, choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. models/NAME")
    parser.add_argument(
        "--recipe", default=None, help="JSON recipe: which datasets, which part in which role"
    )
    parser.add_argument("--data-root", default=".", help="folder holding the recipe's datasets")
    parser.add_argument(
        "--data", action="append", default=[], help="a dataset folder (repeatable), instead of a recipe"
    )
    parser.add_argument(
        "--weights",
        default=None,
        help="backbone weights: 'imagenet' (needs internet), a .weights.h5 file, or 'none'",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        help="start from this bundle's trained weights (same architecture and roles); "
        "with --head-epochs 0 the head phase is skipped",
    )
    defaults = TrainConfig("", "")
    for name in ("input_size", "batch_size", "head_epochs", "epochs", "patience", "test_time_views", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    parser.add_argument(
        "--average-last",
        type=int,
        default=defaults.average_last,
        help="keep every fine-tuning epoch's weights and also try the mean of the last N "
        "(weight averaging); the selection set keeps the better of it and the best epoch",
    )
    for name in ("head_lr", "backbone_lr", "label_smoothing", "max_minutes"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument(
        "--cutmix",
        type=float,
        default=defaults.cutmix,
        help="probability per training image of a box pasted from another image of its "
        "batch (CutMix), the loss mixed by area; 0 (the default) for none",
    )
    config = TrainConfig(**vars(parser.parse_args(argv)))
    if not config.recipe and not config.data:
        parser.error("give the data: --recipe FILE (with --data-root) or --data DIR")
    return config


def main(argv=None) -> None:
    config = parse_args(argv)
    try:
        out = train(config)
    except (TrainingError, data.DatasetError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"bundle written to {out}")


if __name__ == "__main__":
    main()
