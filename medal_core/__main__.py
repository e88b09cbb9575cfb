"""`python -m medal_core COMMAND ...`: one entry point for every stage and service.

    python -m medal_core train --arch mobilenet --recipe recipes/dermoscopic.json ...
    python -m medal_core serve --bundle models/mobilenetv2_cc_ensemble --replicas 2
    python -m medal_core COMMAND --help

Each command is a module with a `main(argv)`; it is imported only when asked for, so
`--help` and the light commands start without TensorFlow or Ray.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # command → (module, what it does)
    "train": ("medal_core.stages.train", "train a model and write a bundle"),
    "calibrate": (
        "medal_core.stages.calibrate",
        "choose a bundle's threshold and band on its calibration set",
    ),
    "evaluate": ("medal_core.stages.evaluate", "the figures of a bundle on its report set or a folder"),
    "ensemble": (
        "medal_core.stages.ensemble",
        "merge trained bundles into one whose logit is their mean",
    ),
    "fit-screening": (
        "medal_core.stages.fit_screening",
        "fit the screen every bundle shares (not a lesion / not dermoscopic)",
    ),
    "serve": ("medal_core.serving.ray_serve", "the HTTP inference service on Ray Serve"),
    "batch": ("medal_core.serving.batch", "score a folder or manifest of any size on Ray Data"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: python -m medal_core COMMAND [options]   (COMMAND --help for its options)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command '{command}'\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"python -m medal_core {command}", *rest]  # argparse's usage line
    result = module.main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
