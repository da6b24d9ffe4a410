"""A process that trains one small checkpoint into a store, for the crash-safety tests.

    python crash_worker.py STORE LOG [FAULT]

FAULT kills this process with SIGKILL at a chosen point (no clean-up handlers run, exactly as
``kill -9`` or the OOM killer would):
  step:N        at the N-th optimiser step (during training)
  resume-write  halfway through writing the first per-epoch resume state
  model-write   halfway through writing the finished checkpoint
  provenance    after the checkpoint is in place, before its provenance is written
The log gets one line per epoch trained ("epoch K"), "start E" (E: the epoch training began at)
and "done" when the checkpoint is stored.
"""

import os
import signal
import sys

import torch

from advclaims import data, models

from advclaims.checkpoints import atomic

from advclaims.checkpoints import store

from advclaims.checkpoints import training

EPOCHS = 4


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def half_then_die(real_write):
    def write(path, fill):
        def partial(tmp):
            fill(tmp)
            size = os.path.getsize(tmp)
            with open(tmp, "r+b") as f:
                f.truncate(size // 2)
            die()
        real_write(path, partial)
    return write


def install(fault: str):
    if fault.startswith("step:"):
        target, real_step = int(fault[5:]), torch.optim.SGD.step
        count = [0]

        def step(self, *a, **k):
            count[0] += 1
            if count[0] == target:
                die()
            return real_step(self, *a, **k)
        torch.optim.SGD.step = step
    elif fault == "resume-write":
        training.atomic_write = half_then_die(atomic.atomic_write)
    elif fault == "model-write":
        real = store.atomic_write
        store.atomic_write = lambda path, fill: (half_then_die(real) if path.suffix == ".pt" else real)(path, fill)
    elif fault == "provenance":
        real = store.atomic_write
        store.atomic_write = lambda path, fill: die() if path.suffix == ".json" else real(path, fill)
    elif fault:
        raise SystemExit(f"unknown fault {fault!r}")


def main(root: str, log: str, fault: str = "") -> None:
    torch.set_num_threads(1)
    install(fault)
    g = torch.Generator().manual_seed(1)
    split = data.Split("train", (torch.rand(256, 1, 16, 16, generator=g) * 255).to(torch.uint8),
                       torch.randint(0, 4, (256,), generator=g))
    recipe = training.Recipe("pgd", epochs=EPOCHS, batch_size=64, lr=0.05, schedule="triangle", eps=0.1,
                             alpha=0.05, attack_steps=1)
    spec = {"net": "crash-test", "recipe": recipe.as_dict()}
    s = store.Store(root)

    def note(line):
        with open(log, "a") as f:
            f.write(line + "\n")

    real_save = training.atomic_write

    def logged_save(path, fill):  # one "epoch K" line per resume state written
        real_save(path, fill)
        note(f"epoch {torch.load(path, weights_only=True)['epoch']}")
    training.atomic_write = logged_save

    def make():
        torch.manual_seed(0)
        net = models.build("lenet", in_channels=1, num_classes=4, width=2, input_size=16)
        metrics = training.train(net, split, recipe, seed=0, progress=False, resume=s.resume_path("models", spec))
        note(f"start {metrics['resumed_from_epoch']}")
        return net.state_dict(), metrics

    s.fetch("models", spec, make)
    note("done")


if __name__ == "__main__":
    main(*sys.argv[1:])
