"""The inference service on Ray Serve: `python -m medal_core serve`.

    python -m medal_core serve --bundle models/mobilenetv2_cc_ensemble [--port 8000] [--host 127.0.0.1]
        [--replicas N] [--address RAY_ADDRESS] [--max-batch-size 8] [--no-batching]

Two deployments make one application:

* `MedalModel` — N replicas, each holding the bundle's predictor. Concurrent requests
  to a replica are gathered by `@serve.batch` (up to `--max-batch-size` images, waiting
  at most `BATCH_WAIT_S`) into one compiled multi-view pass.
* `MedalIngress` — the FastAPI routes of `medal_core.serving.service` (decoding, limits,
  wording), which call the model replicas through a deployment handle. It loads the
  bundle without its model: figures and metadata only.

Ray starts locally unless `--address` names a cluster to join. Usage statistics are
off, and the dashboard is not started. The routes bind to 127.0.0.1 unless `--host`
says otherwise; `MEDAL_API_TOKEN`, when set, is required as a bearer token.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

APP_NAME = "medal"
BATCH_WAIT_S = 0.01  # how long a replica waits to fill a batch
DEFAULT_MAX_BATCH = 8


def _threads_per_replica(cpus: float) -> int:
    return max(1, int(round(cpus)))


def build_application(
    bundle: str | Path,
    replicas: int = 1,
    token: str | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    cpus_per_replica: float = 1.0,
):
    """The Serve application (not yet running): `serve.run(build_application(...))`."""
    from ray import serve

    folder = str(Path(bundle).resolve())

    @serve.deployment(
        name="MedalModel",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": cpus_per_replica},
        max_ongoing_requests=4 * max(1, max_batch_size),
    )
    class MedalModel:
        def __init__(self, folder: str, max_batch_size: int, threads: int):
            import tensorflow as tf

            # Each replica gets its share of the cores, not all of them each.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            from medal_core.serving.predictor import Predictor

            self.predictor = Predictor.from_folder(folder)
            self.cams: dict = {}
            self.predict.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
            self.images_seen = 0
            self.batches_run = 0

        @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
        async def predict(self, images: list[np.ndarray]):
            self.images_seen += len(images)
            self.batches_run += 1
            return self.predictor.predict_batch(images, batch_size=len(images))

        def explain(self, rgb: np.ndarray, layer: str):
            from medal_core.serving.service import explain_maps

            return explain_maps(self.predictor, self.cams, rgb, layer)

        def counts(self) -> dict:
            return {"images": self.images_seen, "batches": self.batches_run}

    def ingress_app():
        # Built on the ingress replica itself: the routes close over a handle to the
        # model deployment.
        from medal_core.bundles.bundle import load_bundle
        from medal_core.serving.service import create_app

        backend = RayBackend(
            load_bundle(folder, load_model=False),
            serve.get_deployment_handle("MedalModel", app_name=APP_NAME),
            replicas,
        )
        return create_app(backend, token=token)

    @serve.deployment(
        name="MedalIngress", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256
    )
    @serve.ingress(ingress_app)
    class MedalIngress:
        def __init__(self, model_handle):
            self.model = model_handle  # bound so that Serve deploys the model with it

    # `bind` is added by @serve.deployment (invisible to the type checker).
    threads = _threads_per_replica(cpus_per_replica)
    model = MedalModel.bind(folder, max_batch_size, threads)  # type: ignore[attr-defined]
    return MedalIngress.bind(model)  # type: ignore[attr-defined]


def build_from_args(args: dict):
    """Application builder for Serve config files and a KubeRay RayService:
    `import_path: medal_core.serving.ray_serve:build_from_args` with
    `args: {bundle: models/mobilenetv2_cc_ensemble, replicas: 2, max_batch_size: 8}`. The bearer token
    comes from MEDAL_API_TOKEN in the replicas' environment."""
    from medal_core.serving.service import token_from_env

    return build_application(
        args["bundle"],
        int(args.get("replicas", 1)),
        token_from_env(),
        int(args.get("max_batch_size", DEFAULT_MAX_BATCH)),
        float(args.get("cpus_per_replica", 1.0)),
    )


class RayBackend:
    """`service.Backend` over a handle to the `MedalModel` deployment."""

    def __init__(self, bundle, handle, replica_count: int):
        self.bundle, self.handle, self._replicas = bundle, handle, replica_count

    def replicas(self) -> int:
        return self._replicas

    async def predict(self, rgb: np.ndarray):
        return await self.handle.predict.remote(rgb)

    async def explain(self, rgb: np.ndarray, layer: str):
        return await self.handle.explain.remote(rgb, layer)


def start_ray(address: str | None, cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start a local one: no usage statistics, no
    dashboard, workers' logs not echoed here."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)


def serve_forever(args: argparse.Namespace) -> None:
    from ray import serve

    from medal_core.serving.service import token_from_env

    start_ray(args.address)
    serve.start(
        http_options={"host": args.host, "port": args.port}, logging_config={"enable_access_log": False}
    )
    max_batch = 1 if args.no_batching else args.max_batch_size
    serve.run(
        build_application(args.bundle, args.replicas, token_from_env(), max_batch, args.cpus_per_replica),
        name=APP_NAME,
        route_prefix="/",
    )
    print(
        f"MedAL Triage service ready on http://{args.host}:{args.port}/v1/health "
        f"({args.replicas} replica(s), batches of up to {max_batch}); Ctrl-C stops it.",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m medal_core serve", description="Serve a bundle over HTTP with Ray Serve."
    )
    parser.add_argument(
        "--bundle",
        required=True,
        help="bundle folder, e.g. models/mobilenetv2_cc_ensemble (the app's default)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback only; 0.0.0.0 for all)"
    )
    parser.add_argument("--replicas", type=int, default=1, help="model replicas")
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join (e.g. ray://head:10001); default: start one here"
    )
    parser.add_argument(
        "--max-batch-size", type=int, default=DEFAULT_MAX_BATCH, help="images a replica gathers into one pass"
    )
    parser.add_argument("--no-batching", action="store_true", help="one image per pass (for comparison)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.max_batch_size < 1:
        parser.error("--replicas and --max-batch-size must be at least 1")
    if not (Path(args.bundle) / "manifest.json").exists():
        parser.error(f"{args.bundle} is not a bundle folder (no manifest.json)")
    return args


def main(argv=None) -> int:
    serve_forever(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
