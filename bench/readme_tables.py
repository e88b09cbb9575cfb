"""Print the README's model tables (Markdown) from the JSON reports of
`python -m medal_core evaluate --bundle models/NAME --data-root DATA --json FILE` and the
bundles' manifests, so that no figure is copied by hand.

    python bench/readme_tables.py --bundle models/mobilenetv2 reports/mobilenetv2_roles.json \
        --bundle models/mobilenet reports/mobilenet_roles.json \
        --bundle models/custom_cnn reports/custom_cnn_roles.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = [  # (report key, what the README calls it)
    ("report (all)", "**report set, all** (chose nothing)"),
    ("report: isic2017", "report: ISIC 2017 part"),
    ("report: isic2018_task3_test", "report: ISIC 2018 Task 3 test"),
    ("report: ph2", "report: PH2"),
    ("selection (all)", "selection set, all (chose the checkpoint and the default bundle)"),
    ("selection: isic2017 official val", "ISIC 2017 official val (part of the selection set)"),
    ("calibration (all)", "calibration set (its ISIC 2017 part chose the threshold)"),
]


def ci(entry: dict, digits: int = 3) -> str:
    return f"{entry['value']:.{digits}f} ({entry['low']:.{digits}f}–{entry['high']:.{digits}f})"


def model_table(reports: dict[str, dict]) -> str:
    lines = [
        "| bundle | set | images (melanomas) | ROC AUC (95% CI) | specificity at sensitivity 0.95 | "
        "specificity at sensitivity 0.82 | ECE | at the bundle's threshold: sensitivity / specificity |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, report in reports.items():
        for key, label in SETS:
            figures = report["sets"].get(key)
            if figures is None:
                continue
            spec = figures["specificity_at_sensitivity"]
            lines.append(
                f"| `{name}` | {label} | {figures['n']} ({figures['malignant']}) | "
                f"{ci(figures['roc_auc'])} | {ci(spec['0.95'])} | {ci(spec['0.82'])} | "
                f"{figures['ece']:.3f} | {figures['sensitivity']['value']:.3f} / "
                f"{figures['specificity']['value']:.3f} |"
            )
    return "\n".join(lines)


def rule_table(manifests: dict[str, dict]) -> str:
    lines = [
        "| bundle | set | threshold | refer | borderline | no estimate | low suspicion | "
        "melanomas sent onwards | benign lesions reassured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, manifest in manifests.items():
        decision = manifest["decision"]
        for role in ("report", "calibration"):
            rule = decision["rule"][role]
            cells = [
                f"{v['melanoma']} mel / {v['benign']} ben"
                for v in (rule["verdicts"][c] for c in ("refer", "indeterminate", "no_estimate", "low"))
            ]
            onward, reassured = rule["melanomas_onward"], rule["benign_reassured"]
            lines.append(
                f"| `{name}` | {role} | {manifest['threshold']['value']:.4f} | "
                + " | ".join(cells)
                + f" | {onward['count']}/{onward['of']} = {onward['share']:.3f} "
                f"({onward['low']:.3f}–{onward['high']:.3f}) | {reassured['count']}/{reassured['of']} = "
                f"{reassured['share']:.3f} ({reassured['low']:.3f}–{reassured['high']:.3f}) |"
            )
    return "\n".join(lines)


def diagnosis_table(reports: dict[str, dict]) -> str:
    names = list(reports)
    rows = {}
    for name, report in reports.items():
        for row in report["sets"]["report per diagnosis"]:
            rows.setdefault(row["diagnosis"], {})[name] = row["above_threshold"]
    lines = [
        "| diagnosis (report set) | " + " | ".join(f"`{n}`: sent onwards" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for diagnosis, by_name in sorted(rows.items()):
        cells = [
            f"{e['successes']}/{e['total']} = {e['value']:.3f}" if (e := by_name.get(n)) else "–"
            for n in names
        ]
        lines.append(f"| {diagnosis} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bundle", nargs=2, action="append", metavar=("FOLDER", "REPORT_JSON"), required=True
    )
    args = parser.parse_args(argv)
    reports, manifests = {}, {}
    for folder, report in args.bundle:
        name = Path(folder).name
        reports[name] = json.loads(Path(report).read_text())
        manifests[name] = json.loads((Path(folder) / "manifest.json").read_text())
    print(model_table(reports), "\n")
    print(rule_table(manifests), "\n")
    print(diagnosis_table(reports))


if __name__ == "__main__":
    main()
