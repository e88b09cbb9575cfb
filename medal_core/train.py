"""Train a model on a labelled dataset and write a model bundle.

    python -m medal_core.train --arch mobilenet --data ../shared/data/isic2017 \\
        --weights ../shared/weights/mobilenet_0.75_224_no_top_imagenet.weights.h5 \\
        --out models/mobilenet

Transfer models train in two phases: the head alone on a frozen backbone, then the whole
network with the backbone at a lower learning rate than the head (batch-norm statistics
stay frozen). Both phases stop early on validation ROC AUC and keep the best weights.
Every epoch is checkpointed under `OUT/checkpoints`: run the same command again after an
interruption and training resumes where it stopped; a finished run goes straight to
writing the bundle.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import keras

from medal_core import bundle, data, evaluate, metrics, models, ood, pipeline
from medal_core.inference import ModelRunner


@dataclass
class TrainConfig:
    arch: str
    data: str
    out: str
    weights: str | None = None
    manifest: str | None = None
    input_size: int | None = None
    batch_size: int = 32
    head_epochs: int = 3
    epochs: int = 30
    head_lr: float = 1e-3
    backbone_lr: float = 3e-5
    patience: int = 6
    extra_val_fraction: float = 0.15
    max_minutes: float | None = None
    test_time_views: int = 8
    seed: int = 42


class TwoRateTrainer(keras.Model):
    """Wraps a model for training only, so that the backbone's variables are updated by
    their own (slower) optimizer and the head's by the compiled one."""

    def __init__(self, model: keras.Model, backbone_optimizer: keras.optimizers.Optimizer):
        super().__init__(name="trainer")
        self.model = model
        self.backbone_optimizer = backbone_optimizer
        backbone_ids = {id(v) for layer in model.layers if models.is_backbone_layer(layer)
                        for v in layer.trainable_variables}
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

    def __init__(self, model: keras.Model, folder: Path, monitor: str = "val_auc",
                 patience: int = 6, max_seconds: float | None = None):
        super().__init__()
        self.inner_model = model
        self.weights_path = folder / "best.weights.h5"
        self.state_path = folder / "best.json"
        self.monitor, self.patience, self.max_seconds = monitor, patience, max_seconds
        self.state = (json.loads(self.state_path.read_text()) if self.state_path.exists()
                      else {"best": -np.inf, "best_epoch": -1, "wait": 0, "seconds": 0.0})

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


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights inversely proportional to class frequency, averaging 1 over the data."""
    counts = np.bincount(labels, minlength=2)
    return {c: float(len(labels) / (2 * counts[c])) for c in (0, 1)}


def run_phase(name: str, model: keras.Model, train_ds, val_ds, config: TrainConfig,
              epochs: int, head_lr: float, backbone_lr: float | None,
              work: Path, weights: dict[int, float], max_seconds: float | None) -> float:
    """One fit() call, resumable: skipped if `work/name/done` exists. Returns the
    seconds of training the phase took."""
    folder = work / name
    if (folder / "done").exists():
        print(f"[{name}] already finished; loading its best weights", flush=True)
        model.load_weights(folder / "best.weights.h5")
        return json.loads((folder / "done").read_text())["seconds"]
    folder.mkdir(parents=True, exist_ok=True)
    steps = epochs * int(np.ceil(train_ds.cardinality().numpy()))
    schedule = lambda lr: keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
    trainer = TwoRateTrainer(model, keras.optimizers.Adam(schedule(backbone_lr or head_lr)))
    trainer.compile(optimizer=keras.optimizers.Adam(schedule(head_lr)),
                    loss=keras.losses.BinaryCrossentropy(),
                    metrics=[keras.metrics.AUC(name="auc")])
    trainer.build((None, *model.input_shape[1:]))
    keeper = KeepBestWeights(model, folder, patience=config.patience, max_seconds=max_seconds)
    print(f"[{name}] up to {epochs} epochs, head lr {head_lr:g}, backbone lr "
          f"{backbone_lr if backbone_lr else 'frozen'}", flush=True)
    trainer.fit(
        train_ds, validation_data=val_ds, epochs=epochs, class_weight=weights, verbose=2,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(folder / "backup")),
            keeper,
            keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
            keras.callbacks.TensorBoard(str(work / "tensorboard" / name)),
        ],
    )
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
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(asdict(config), indent=2))

    dataset = data.load_dataset(config.data, manifest=config.manifest)
    train_set, val_set = data.make_validation_split(
        dataset, extra_fraction=config.extra_val_fraction, seed=config.seed)
    print(f"train {train_set.summary()}\nvalidation {val_set.summary()}", flush=True)
    train_ds = pipeline.make_pipeline(train_set, size, config.batch_size, training=True,
                                      seed=config.seed)
    val_ds = pipeline.make_pipeline(val_set, size, 64)
    weights = class_weights(train_set.labels)
    budget = config.max_minutes * 60 if config.max_minutes else None

    model = models.build_model(config.arch, size, config.weights)
    if spec.is_transfer:
        models.set_backbone_trainable(model, False)
        head_seconds = run_phase("head", model, train_ds, val_ds, config, config.head_epochs,
                                 config.head_lr, None, work, weights, budget)
        models.set_backbone_trainable(model, True)
        # The head is already fitted: it moves at a tenth of its first-phase rate.
        run_phase("finetune", model, train_ds, val_ds, config, config.epochs,
                  config.head_lr / 10, config.backbone_lr, work, weights,
                  budget and budget - head_seconds)
    else:
        run_phase("scratch", model, train_ds, val_ds, config, config.epochs,
                  config.head_lr, None, work, weights, budget)

    return write_bundle(model, config, train_set, val_set, work)


def write_bundle(model: keras.Model, config: TrainConfig, train_set: data.Dataset,
                 val_set: data.Dataset, work: Path) -> Path:
    """Calibrate and choose the operating point on validation, then save the bundle."""
    runner = ModelRunner(model)  # one folded, traced pass for the logits and the OOD features
    val_images = data.load_images(val_set.paths, runner.input_size)
    logits = evaluate.mean_logits(runner, val_images, views=config.test_time_views)
    weights = class_weights(train_set.labels)
    # Class weighting raises every logit by log(w1/w0); undo it before fitting T, so the
    # probabilities shown are estimates at the data's own prevalence.
    logit_offset = float(np.log(weights[1] / weights[0]))
    temperature = metrics.fit_temperature(val_set.labels, logits - logit_offset)
    probabilities = bundle.calibrated_probability(logits, logit_offset, temperature)
    threshold = evaluate.operating_points(val_set.labels, probabilities)
    report = evaluate.evaluate_probabilities(val_set.labels, probabilities, threshold["value"])
    report["calibration"] = evaluate.calibration_summary(val_set.labels, logits, temperature,
                                                         logit_offset)
    print(evaluate.format_report(report, f"{Path(config.out).name} on its validation set"), flush=True)
    spec = models.ARCHITECTURES[config.arch]
    manifest = {
        "name": Path(config.out).name,
        "architecture": config.arch,
        "input_size": int(model.input_shape[1]),
        "class_names": list(data.CLASS_NAMES),
        "backbone_weights": describe_weights(config.weights, spec.is_transfer),
        "gradcam_layer": spec.gradcam_layer,
        "test_time_views": config.test_time_views,
        "logit_offset": logit_offset,
        "temperature": temperature,
        "threshold": threshold,
        "parameters": int(model.count_params()),
        "data": {
            "source": str(config.data),
            "train": train_set.summary(),
            "validation": val_set.summary(),
            "validation_rule": {"official_split": "val", "extra_fraction": config.extra_val_fraction,
                                "seed": config.seed},
        },
        "validation_metrics": report,
        "training": {"config": asdict(config),
                     "phases": {p.name: json.loads((p / "done").read_text())
                                for p in sorted(work.iterdir()) if (p / "done").exists()}},
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%d"),
    }
    predictions = bundle.Predictions(val_set.image_ids, val_set.labels, logits, probabilities)
    folder = bundle.save_bundle(config.out, model, manifest, predictions, work / "history.csv")
    detector, entry = ood.fit_bundle_ood(runner, data.load_images(train_set.paths, runner.input_size),
                                         val_images)
    bundle.attach_ood(folder, detector, entry)
    return folder


def describe_weights(weights: str | None, is_transfer: bool) -> dict:
    """Where the backbone's starting weights came from, for the manifest."""
    if not is_transfer or weights is None or str(weights).lower() == "none":
        return {"source": "none", "note": "trained from random initialisation"}
    if str(weights) == "imagenet":
        return {"source": "imagenet", "note": "Keras Applications ImageNet weights (downloaded)"}
    return {"source": "file", "file": Path(weights).name, "sha256": bundle.sha256_file(weights),
            "note": "ImageNet-pretrained weights read from a local file"}


def library_versions() -> dict:
    import platform

    import PIL

    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__, "pillow": PIL.__version__}


def parse_args(argv=None) -> TrainConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--data", required=True, help="dataset folder (ISIC or class folders)")
    parser.add_argument("--out", required=True, help="bundle folder to write, e.g. models/NAME")
    parser.add_argument("--weights", default=None,
                        help="backbone weights: 'imagenet' (needs internet), a .weights.h5 "
                             "file, or 'none'")
    parser.add_argument("--manifest", default=None, help="CSV manifest (filepath,label[,split])")
    defaults = TrainConfig("", "", "")
    for name in ("input_size", "batch_size", "head_epochs", "epochs", "patience",
                 "test_time_views", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("head_lr", "backbone_lr", "extra_val_fraction", "max_minutes"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    return TrainConfig(**vars(parser.parse_args(argv)))


def main(argv=None) -> None:
    out = train(parse_args(argv))
    print(f"bundle written to {out}")


if __name__ == "__main__":
    main()
