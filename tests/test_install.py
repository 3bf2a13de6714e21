"""A non-editable install carries `tasks/` and lists every task (the wheel is what `pip install .` installs)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nli_eval.taskspec import builtin_catalog

REPO = Path(__file__).resolve().parents[1]
NO_BACKEND = ("No matching distribution found for hatchling", "Could not find a version that satisfies the requirement hatchling")


def build_wheel(out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
           str(REPO), "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 and any(text in proc.stderr for text in NO_BACKEND):
        pytest.skip("the build backend (hatchling) is neither installed nor downloadable here")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = out.glob("nli_eval-*.whl")
    return wheel


@pytest.mark.slow
def test_installed_wheel_lists_every_task(tmp_path):
    wheel = build_wheel(tmp_path / "wheels")
    task_files = sorted(p.name for p in (REPO / "tasks").glob("*.toml"))
    with zipfile.ZipFile(wheel) as zf:
        packaged = {Path(n).name for n in zf.namelist() if n.startswith("nli_eval/tasks/") and n.endswith(".toml")}
    assert packaged == set(task_files)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "--target", str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    # -S: no site-packages, so neither the repository nor an editable install can answer the import.
    env = {**os.environ, "PYTHONPATH": str(target)}
    probe = ("import json, nli_eval, nli_eval.taskspec as t; "
             "print(json.dumps({'file': nli_eval.__file__, 'dir': str(t.tasks_dir()), "
             "'names': t.builtin_catalog().names()}))")
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120, check=True)
    found = json.loads(out.stdout)
    assert found["file"].startswith(str(target)) and found["dir"] == str(target / "nli_eval" / "tasks")
    assert found["names"] == builtin_catalog().names()

    listing = subprocess.run([sys.executable, "-S", "-m", "nli_eval", "tasks"], capture_output=True, text=True,
                             env=env, cwd=tmp_path, timeout=120)
    assert listing.returncode == 0, listing.stderr
    listed = {line.split()[0] for line in listing.stdout.splitlines()[2:] if line.strip()}
    assert listed == set(builtin_catalog().names())
