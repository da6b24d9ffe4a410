"""`advclaims train` under torchrun: two ranks (gloo on the CPU) train one checkpoint with
DistributedDataParallel into the store, and a single process then loads it instead of training."""

import json
import os
import subprocess
import sys

import pytest

from advclaims import data
from advclaims.checkpoints.pipeline import Pipeline
from advclaims.checkpoints.store import Store

ARGS = ["train", "--role", "std", "--dataset", "fashion_mnist", "--arch", "lenet", "--budget", "smoke",
        "--device", "cpu"]


def test_torchrun_ddp_training_fills_the_store_the_fixtures_read(tmp_path):
    try:
        data.read_arrays("fashion_mnist", "test", data.default_root(), limit=1)
    except data.DatasetMissing as err:
        pytest.skip(str(err))
    cache = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "advclaims.cli", *ARGS, "--cache", str(cache)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.count("(trained)") == 1, run.stdout  # rank 0 reports; the other rank is silent

    [meta] = (cache / "models").glob("*.json")
    record = json.loads(meta.read_text())
    assert record["metrics"]["world_size"] == 2
    assert record["metrics"]["clean_accuracy"] > 0.5  # two ranks together trained a working model

    pipe = Pipeline(budget="smoke", store=Store(cache), device="cpu", progress=False)
    single = pipe.model("std", "fashion_mnist", arch="lenet")
    assert not single.trained_now and single.key == meta.stem
