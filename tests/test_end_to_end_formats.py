"""Every (paper x dataset) pair the suite offers runs end to end on format-true data, before a GPU meets it.

A session fixture writes Fashion-MNIST content in the exact on-disk layouts of MNIST, CIFAR-10, CIFAR-100, SVHN
and Tiny-ImageNet (advclaims.data.proxy), and the test runs one claim instance of every pair, one pytest subprocess
per dataset, at the smoke budget and one seed (the paths, not the statistics, are under test), as a user would: ``pytest claims ... --repro-data-root <proxies>``. Each instance must
yield a verdict and a report entry; a proxy's verdict is not held against expected/ (outcome "proxy data").
ImageNet is written and read back too, though no claim offers it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from advclaims import data

from advclaims.data import proxy

ROOT = Path(__file__).resolve().parents[1]
CLAIMS = ROOT / "claims"

# the instance CI runs per pair: the cheapest claim that trains and analyses the pair's own models. Curvature: CV-1 on
# CIFAR-10 (block Lanczos at D = 3,072, targeted DeepFool to every class) and CV-8 on CIFAR-100 (the DeepFool SVD at
# D = 3,072 on a 100-class NiN). CV-1 on the CIFAR-100 proxy below is unmeasurable: that NiN (28.3% clean) predicts
# none of classes 1 to 9 and targeted DeepFool reaches class 5 from none of 400 images (2026-12-08); on the faint proxy
# at 20,000 images it runs (docs/datasets.md), but that costs three times the training. The smoke budget's 10-class
# subset is tested in tests/test_curvature.py and measured in docs/datasets.md. The score curves run in CI on
# Fashion-MNIST.
PAIRS = {
    ("local_properties", "mnist"): "LP-7",
    ("local_properties", "cifar10"): "LP-8",
    ("local_properties", "svhn"): "LP-7",
    ("high_frequency", "mnist"): "HF-1",
    ("high_frequency", "cifar10"): "HF-3",
    ("info_bottleneck", "cifar10"): "IB-4",
    ("info_bottleneck", "svhn"): "IB-4",
    ("info_bottleneck", "tiny_imagenet"): "IB-4",
    ("curvature", "mnist"): "CV-8",
    ("curvature", "cifar10"): "CV-1",
    ("curvature", "cifar100"): "CV-8",
}
# images per proxy: enough for each model to pass the health gate at smoke, few enough for CI (measured 2026-12-08).
# At 1,000 CIFAR-10 images the STD ResNet-18 reached 20% (floor 19%) and HF-3 found no targeted success to analyse.
# CIFAR-100: the vivid tint (proxy.TINTS) at 6,000 images, where NiN reached 28.3% clean on 300 images (floor
# 10.9%); the faint tint, which stands in for real CIFAR-100's hardness, needs the 20,000 images the smoke budget
# trains on (24.2% there, 5.4% at 6,000), and the item took 268 s against 132 s. Tiny-ImageNet: its ADV VGG-16
# reached 11.0% at 3,000 images and 15.7% at 4,500, against a floor of 10.45%: too close for a test that must pass
# on another machine's floats.
SIZES = {"mnist": (2000, 300), "cifar10": (2000, 300), "svhn": (2000, 300), "cifar100": (6000, 300),
         "tiny_imagenet": (6000, 300), "imagenet": (1000, 100)}
TINTS = {"cifar100": "vivid"}
# the read-back test needs the layouts, not enough images to learn from
READ_BACK = {name: (200, 50) for name in SIZES}


def claim_tests() -> dict[str, tuple[str, str]]:
    """claim id -> (claims module file, test function), read from the @pytest.mark.claim decorators."""
    out = {}
    for path in sorted(CLAIMS.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                for dec in node.decorator_list:
                    if (isinstance(dec, ast.Call) and getattr(dec.func, "attr", None) == "claim" and dec.args
                            and isinstance(dec.args[0], ast.Constant)):
                        out[dec.args[0].value] = (path.name, node.name)
    return out


def offered_pairs() -> set[tuple[str, str]]:
    """(paper, dataset) for every dataset a claims module parametrises (its DATASETS tuple)."""
    pairs = set()
    for path in CLAIMS.glob("test_*.py"):
        paper = path.stem.removeprefix("test_")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DATASETS" for t in node.targets):
                pairs |= {(paper, elt.value) for elt in node.value.elts}
    return pairs


def test_every_offered_pair_but_the_embedded_default_has_an_instance_here():
    assert set(PAIRS) == {p for p in offered_pairs() if p[1] != "fashion_mnist"}
    tests = claim_tests()
    assert all(cid in tests for cid in PAIRS.values())


@pytest.fixture(scope="session")
def proxies(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proxies")
    for name, (train, test) in READ_BACK.items():
        proxy.write(name, root, train=train, test=test)
    return root


@pytest.mark.parametrize("name", proxy.NAMES)
def test_proxies_are_read_back_in_their_real_layouts(proxies, name):
    meta = data.info(name)
    for split, n in zip(("train", "test"), READ_BACK[name]):
        s = data.load(name, split, root=proxies)
        assert tuple(s.x.shape) == (n, meta.channels, meta.size, meta.size)
        assert 0 <= int(s.y.min()) and int(s.y.max()) < meta.num_classes
    assert data.proxy_marker(name, proxies)["proxy_of"] == name


def _datasets() -> list[str]:
    return sorted({dataset for _, dataset in PAIRS})


@pytest.mark.slow
@pytest.mark.parametrize("dataset", _datasets())
def test_every_paper_and_dataset_pair_yields_a_verdict_and_a_report_entry(dataset, tmp_path):
    """One dataset's pairs in one pytest subprocess (they share its models through its own store); the datasets are
    separate tests, so that pytest-xdist spreads them over the workers."""
    pairs = {pair: cid for pair, cid in PAIRS.items() if pair[1] == dataset}
    root = tmp_path / "proxies"
    proxy.write(dataset, root, train=SIZES[dataset][0], test=SIZES[dataset][1], tint=TINTS.get(dataset))
    tests = claim_tests()
    ids = []
    for (paper, _), cid in sorted(pairs.items()):
        module, function = tests[cid]
        variant = f"{dataset}-vgg16" if paper == "info_bottleneck" else dataset
        ids.append(f"claims/{module}::{function}[{variant}]")
    report = tmp_path / "report"
    env = {**os.environ, "ADVCLAIMS_CACHE": str(tmp_path / "store")}
    result = subprocess.run([sys.executable, "-m", "pytest", *ids, "-p", "no:cacheprovider", "--repro-budget=smoke",
                             "--repro-seeds=1", f"--repro-data-root={root}", f"--repro-report={report}",
                             "--repro-quiet", "-q", "-n", "0"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=3600)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    records = json.loads((report / "report.json").read_text())["claims"]
    got = {(r["paper"], r["dataset"]): r for r in records}
    assert set(got) == set(pairs)
    for pair, r in got.items():
        assert r["claim"] == pairs[pair]
        assert r["outcome"] == "proxy data" and r["error"] is None and r["checks"], (pair, r.get("error"))
        assert r["proxy"]["proxy_of"] == dataset
        assert r["profile"] and r["wall_seconds"] > 0  # each instance's time, by phase (advclaims.timing)
    text = (report / "report.md").read_text()
    assert all(f"| {cid} | " in text for cid in pairs.values())
