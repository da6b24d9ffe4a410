"""The package works as an installed plugin, not only from an editable checkout: a wheel installed non-editable into
a fresh virtual environment runs the checkout's claims (the pytest11 entry point loads the plugin; pytest.ini's
repro_expected key finds expected/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_non_editable_runs_the_checkouts_claims(pipeline, tmp_path):
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = wheels.glob("advclaims-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # the dependencies (torch and the rest) from this environment's site-packages, on the path after the venv's
    # own; a path added by a .pth file runs none of that folder's .pth files, so an editable advclaims there is off
    venv_site = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (venv_site / "zz_dependencies.pth").write_text("\n".join(deps) + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import advclaims, advclaims.plugin; print(advclaims.__file__)"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
    assert str(venv_site) in where.stdout, where.stdout + where.stderr  # the wheel's copy, not the checkout's lib/
    report = tmp_path / "report"
    run = subprocess.run([str(python), "-m", "pytest", "claims", "-m", "fashion_mnist", "-k", "LP-7", "-p", "no:xdist",
                          "-q", "--repro-quiet", f"--repro-cache={pipeline.store.root}", f"--repro-report={report}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    [record] = json.loads((report / "report.json").read_text())["claims"]
    assert record["claim"] == "LP-7" and record["outcome"] == "passed"
