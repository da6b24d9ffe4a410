"""``advclaims``: train models into the store, list datasets, compare saved runs.

    advclaims train --role adv --dataset fashion_mnist --budget smoke
    advclaims datasets [--data-root DIR]
    advclaims compare OLD.json NEW.json [--fail-on-flip]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import budgets as budgets_mod
from . import data as data_mod
from . import models as models_mod
from . import report as report_mod


def _train(args) -> int:
    import torch

    from .pipeline import Pipeline
    from .store import Store

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = Pipeline(budget=args.budget, store=Store(args.cache), data_root=args.data_root, device=device,
                    download=args.download, progress=True)
    try:
        trained = pipe.model(args.role, args.dataset, arch=args.arch, weight_decay=args.weight_decay, seed=args.seed)
    except data_mod.DatasetMissing as err:
        print(f"advclaims train: {err}", file=sys.stderr)
        return 2
    state = "trained" if trained.trained_now else "already in the store"
    metrics = {k: v for k, v in trained.metrics.items() if k != "history"}
    print(f"{trained.key} ({state}): {json.dumps(metrics)}")
    return 0


def _datasets(args) -> int:
    root = Path(args.data_root).expanduser() if args.data_root else data_mod.default_root()
    for name in sorted(data_mod.DATASETS):
        try:
            data_mod.read_arrays(name, "test", root, limit=1)
            print(f"{name:<14} present")
        except data_mod.DatasetMissing as err:
            print(f"{name:<14} missing: {err}")
        except data_mod.DatasetCorrupt as err:
            print(f"{name:<14} corrupt: {err}")
    return 0


def _compare(args) -> int:
    try:
        old, new = (json.loads(Path(p).read_text()) for p in (args.old, args.new))
    except (OSError, ValueError) as err:
        print(f"advclaims compare: cannot read a report: {err}", file=sys.stderr)
        return 2
    changes = report_mod.compare(old, new)
    print("\n".join(report_mod.format_changes(changes, args.old)))
    return 1 if args.fail_on_flip and any(c["kind"] == "verdict flipped" for c in changes) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="advclaims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model into the checkpoint store (the same one the tests use)")
    t.add_argument("--role", choices=("std", "adv"), required=True)
    t.add_argument("--dataset", choices=sorted(data_mod.DATASETS), required=True)
    t.add_argument("--budget", choices=budgets_mod.NAMES, default="smoke")
    t.add_argument("--arch", choices=models_mod.names(), default="resnet18")
    t.add_argument("--weight-decay", type=float, default=5e-4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cache", default=None, help="checkpoint store (default: $ADVCLAIMS_CACHE or ~/.cache/advclaims/store)")
    t.add_argument("--data-root", default=None)
    t.add_argument("--download", action="store_true")
    t.add_argument("--device", default="auto")
    t.set_defaults(run=_train)
    d = sub.add_parser("datasets", help="which datasets are present under the data root, and how to add the rest")
    d.add_argument("--data-root", default=None)
    d.set_defaults(run=_datasets)
    c = sub.add_parser("compare", help="what changed between two report.json files")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--fail-on-flip", action="store_true", help="exit 1 when a verdict flipped")
    c.set_defaults(run=_compare)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
