"""``advclaims``: train models into the store, list datasets, compare saved runs.

    advclaims train --role adv --dataset fashion_mnist --budget smoke
    torchrun --nproc_per_node 8 -m advclaims.cli train --role adv --dataset cifar10 --arch wrn28_10 --budget paper
    advclaims datasets [--data-root DIR]
    advclaims import ARCH:PATH|module:callable --role adv --dataset cifar10 [--name N] [--published-clean 0.849]
                     [--stages conv1:body.0,layer1:body.3,...] [--replace]
    advclaims claims [ID] [--markdown]
    advclaims proxy-data DIR [--datasets cifar10 svhn ...] [--train N] [--test N]
    advclaims compare OLD.json NEW.json [--fail-on-flip]
    advclaims models [--json] -- claims -m cifar10 --repro-budget paper    (every model that selection trains)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from advclaims import accel as accel_mod
from advclaims import budgets as budgets_mod
from advclaims import data as data_mod
from advclaims.checkpoints import distributed
from advclaims.checkpoints import external as external_mod
from advclaims import models as models_mod
from advclaims.verdict import report as report_mod


def _train(args) -> int:
    from advclaims.checkpoints.pipeline import Pipeline
    from advclaims.checkpoints.store import Store
    from advclaims.checkpoints.health import ModelUnhealthy
    from advclaims.checkpoints.training import TrainingDiverged

    device = distributed.setup(args.device)  # under torchrun: join the group, take GPU LOCAL_RANK
    lead = distributed.world()[0] == 0
    compile_ = {"on": True, "off": False}.get(args.compile, "auto")
    try:
        pipe = Pipeline(budget=args.budget, store=Store(args.cache), data_root=args.data_root, device=device,
                        download=args.download, progress=lead,
                        accel=accel_mod.resolve(device, args.precision, compile_))
        trained = pipe.model(args.role, args.dataset, arch=args.arch, weight_decay=args.weight_decay, seed=args.seed)
    except (data_mod.DatasetMissing, data_mod.DatasetCorrupt, TrainingDiverged, ModelUnhealthy) as err:
        print(f"advclaims train: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.teardown()
    if lead:
        state = "trained" if trained.trained_now else "already in the store"
        metrics = {k: v for k, v in trained.metrics.items() if k != "history"}
        print(f"{trained.key} ({state}): {json.dumps(metrics)}")
    return 0


def _models(args) -> int:
    """Every trained model the pytest selection needs, one ``advclaims train`` line each (or JSON)."""
    from advclaims.plugin.needs import needed

    selection = [a for a in args.selection if a != "--"] or ["claims"]
    try:
        needs, budget = needed(selection)
    except ValueError as err:
        print(f"advclaims models: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"budget": budget, "models": [n.as_dict() for n in needs]}, indent=2))
        return 0
    for n in needs:
        print(n.command(budget) if n.trainable else f"# trained inside its test ({n.via}, {budget} budget's reduced "
                                                    f"subset): {n.command(budget)}")
    return 0


def _datasets(args) -> int:
    root = Path(args.data_root).expanduser() if args.data_root else data_mod.default_root()
    for name in sorted(data_mod.DATASETS):
        try:
            data_mod.read_arrays(name, "test", root, limit=1)
            proxy = data_mod.proxy_marker(name, root)
            print(f"{name:<14} present" + (f" (a proxy: {proxy.get('content', 'other content')} in its layout; "
                                            f"verdicts on it are not held against expected/)" if proxy else ""))
        except data_mod.DatasetMissing as err:
            print(f"{name:<14} missing: {err}")
        except data_mod.DatasetCorrupt as err:
            print(f"{name:<14} corrupt: {err}")
    return 0


def _import(args) -> int:
    from advclaims.checkpoints.external import ModelRefused
    from advclaims.checkpoints.health import ModelUnhealthy
    from advclaims.checkpoints.pipeline import Pipeline
    from advclaims.checkpoints.store import Store

    published = {k: v for k, v in (("clean", args.published_clean), ("robust", args.published_robust)) if v is not None}
    try:
        stages = external_mod.parse_stages(args.stages) if args.stages is not None else None
        pipe = Pipeline(budget=args.budget, store=Store(args.cache), data_root=args.data_root, device=args.device,
                        progress=False)
        name, record, what_happened = pipe.import_model(args.spec, args.role, args.dataset, name=args.name,
                                                        published=published, stages=stages, replace=args.replace,
                                                        base=Path.cwd())
    except (ModelRefused, ModelUnhealthy, data_mod.DatasetMissing, data_mod.DatasetCorrupt) as err:
        print(f"advclaims import: {err}", file=sys.stderr)
        return 2
    if what_happened:  # the name held this model already: unchanged, or its provenance updated
        print(f"advclaims import: {what_happened}")
    m = record["metrics"]
    reference = (m["source"].get("reference") or {})
    held = (f"; held against {report_mod.reference_text(reference)}" if reference.get("clean_accuracy") is not None else "")
    print(f"imported {name!r} for role {args.role} on {args.dataset}: clean {m['clean_accuracy']:.1%}, PGD-20 "
          f"{m['pgd20_accuracy']:.1%} on {m['eval_images']} images{held}; weights sha256 "
          f"{m['source'].get('state_sha256', m['source']['sha256'])[:16]}; "
          f"run the claims on it with --repro-model {args.role}={name}")
    return 0


def _accuracy(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy: pass a fraction from 0 to 1, e.g. 0.849")
    return value


def _claims(args) -> int:
    from advclaims.verdict import catalogue
    from advclaims.verdict.expected import ExpectedError

    try:
        print(catalogue.markdown(args.expected) if args.markdown else catalogue.text(args.id, args.expected), end="")
    except (KeyError, ExpectedError) as err:
        print(f"advclaims claims: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    return 0


def _proxy_data(args) -> int:
    from advclaims.data import proxy

    for name in args.datasets:
        try:
            folder = proxy.write(name, args.root, train=args.train, test=args.test, source=args.source)
            train = data_mod.proxy_marker(name, args.root)["train"]  # the count written (write resolves None)
        except (data_mod.DatasetMissing, data_mod.DatasetCorrupt, ValueError) as err:
            print(f"advclaims proxy-data: {name}: {err}", file=sys.stderr)
            return 2
        print(f"{name:<14} {folder} ({train} training, {args.test} test images of Fashion-MNIST content)")
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


def _durations(args) -> int:
    from advclaims.verdict import durations as durations_mod

    try:
        report = json.loads(Path(args.report).read_text())
        if not report.get("budget") or not report.get("claims"):
            raise ValueError("no budget or no claims in it")
    except (OSError, ValueError) as err:
        print(f"advclaims durations: cannot read a report from {args.report}: {err}", file=sys.stderr)
        return 2
    path = durations_mod.write(args.into, report)
    print(f"{len(report['claims'])} instance times of the {report['budget']} budget written to {path}")
    return 0


# argument types: a bad value is argparse's one-line usage error (exit 2), never a traceback later


def _device(text: str):
    import torch

    from advclaims.accel import parse_device

    try:
        return parse_device(text, torch.cuda.device_count())
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**31:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed: pass a whole number from 0 to 2147483647")
    return seed


def _weight_decay(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a weight decay: pass a finite number >= 0, e.g. 5e-4")
    return value


def _directory(text: str) -> str:
    try:
        is_file = Path(text).expanduser().is_file()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, too long a name, or ~user of an unknown user
        is_file = True
    if not text or "\0" in text or is_file:
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory path: pass a directory")
    return text


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: pass a whole number >= 1")
    return n


def proxy_names() -> tuple[str, ...]:
    return tuple(name for name in data_mod.FOLDERS if name != "fashion_mnist")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every value is checked here, so a mistake exits 2 before any work starts."""
    parser = argparse.ArgumentParser(prog="advclaims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one model into the checkpoint store (the same one the tests use)")
    t.add_argument("--role", choices=("std", "adv"), required=True)
    t.add_argument("--dataset", choices=sorted(data_mod.DATASETS), required=True)
    t.add_argument("--budget", choices=budgets_mod.NAMES, default="smoke")
    t.add_argument("--arch", choices=models_mod.names(), default="resnet18")
    t.add_argument("--weight-decay", type=_weight_decay, default=5e-4)
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--cache", type=_directory, default=None,
                   help="checkpoint store (default: $ADVCLAIMS_CACHE or ~/.cache/advclaims/store)")
    t.add_argument("--data-root", type=_directory, default=None)
    t.add_argument("--download", action="store_true")
    t.add_argument("--device", type=_device, default="auto",
                   help="cpu, cuda, cuda:N or auto (default); under torchrun each rank takes GPU LOCAL_RANK")
    t.add_argument("--precision", choices=accel_mod.PRECISIONS, default="auto",
                   help="auto (default): bf16 autocast on CUDA, fp32 on the CPU; must match the tests' to share the model")
    t.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the training forward (auto: on CUDA only)")
    t.set_defaults(run=_train)
    d = sub.add_parser("datasets", help="which datasets are present under the data root, and how to add the rest")
    d.add_argument("--data-root", type=_directory, default=None)
    d.set_defaults(run=_datasets)
    i = sub.add_parser("import", help="put an external model into the store, measured and held to the health gate, "
                                      "under a name the claims can use (--repro-model ROLE=NAME)")
    i.add_argument("spec", help="ARCH:PATH (a state dict or checkpoint of a registry architecture; ARCH:PATH:raw for "
                                "unnormalised pixels) or module:callable (an nn.Module on [0, 1] pixels)")
    i.add_argument("--role", required=True, choices=sorted(external_mod.ROLES))
    i.add_argument("--dataset", choices=sorted(data_mod.DATASETS), required=True)
    i.add_argument("--name", default=None, help="the name runs use (default: the file's stem or the callable's name)")
    i.add_argument("--budget", choices=budgets_mod.NAMES, default="smoke",
                   help="whose health-gate floor applies and whose evaluation images are used (default smoke)")
    i.add_argument("--published-clean", type=_accuracy, default=None, help="the model's published clean accuracy")
    i.add_argument("--published-robust", type=_accuracy, default=None, help="its published robust accuracy")
    i.add_argument("--stages", default=None, metavar="STAGE:MODULE,...",
                   help="a layout of your own: the modules that stand for the stages the claims read, e.g. "
                        "conv1:body.0,layer1:body.3 (stored with the model)")
    i.add_argument("--replace", action="store_true",
                   help="replace a model already imported under --name with these weights (or this stage map)")
    i.add_argument("--cache", type=_directory, default=None)
    i.add_argument("--data-root", type=_directory, default=None)
    i.add_argument("--device", type=_device, default="cpu")
    i.set_defaults(run=_import)
    k = sub.add_parser("claims", help="the claims catalogue from expected/: every claim, or one in full")
    k.add_argument("id", nargs="?", default=None, help="a claim id, e.g. LP-8 (default: one line per claim)")
    k.add_argument("--markdown", action="store_true", help="the whole catalogue as markdown (docs/claims.md)")
    k.add_argument("--expected", type=_directory, default=None, help="the expected/ folder (default: the project's)")
    k.set_defaults(run=_claims)
    p = sub.add_parser("proxy-data", help="write Fashion-MNIST content in the exact on-disk layout of other datasets "
                                          "(to run their paths end to end; verdicts on it are not held against expected/)")
    p.add_argument("root", type=_directory, help="the data root to write under (pass it as --repro-data-root)")
    p.add_argument("--datasets", nargs="+", choices=proxy_names(), default=list(proxy_names()))
    p.add_argument("--train", type=_count, default=None,
                   help="training images per dataset (default: what the smoke budget trains on, 6000; CIFAR-100 20000)")
    p.add_argument("--test", type=_count, default=1000, help="test images per dataset (default 1000)")
    p.add_argument("--source", type=_directory, default=None,
                   help="data root holding Fashion-MNIST (default: where the suite finds it)")
    p.set_defaults(run=_proxy_data)
    c = sub.add_parser("compare", help="what changed between two report.json files")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--fail-on-flip", action="store_true", help="exit 1 when a verdict flipped")
    c.set_defaults(run=_compare)
    t2 = sub.add_parser("durations", help="keep a run's instance times (report.json) in claims/durations.json, which "
                                         "orders claim instances longest first in the next parallel run")
    t2.add_argument("report", help="a report.json of a run (--repro-report DIR writes DIR/report.json)")
    t2.add_argument("--into", default=str(Path("claims") / "durations.json"),
                    help="the durations file (default claims/durations.json)")
    t2.set_defaults(run=_durations)
    m = sub.add_parser("models", help="every model a pytest selection trains (roles, seeds, sweep members), one "
                                      "`advclaims train` line each: train them in parallel before the claims run")
    m.add_argument("--json", action="store_true", help="the list as JSON")
    m.add_argument("selection", nargs=argparse.REMAINDER,
                   help="pytest arguments after --, e.g. -- claims -m cifar10 --repro-budget paper (default: claims)")
    m.set_defaults(run=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)

if __name__ == "__main__":
    sys.exit(main())
