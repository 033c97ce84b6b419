"""benchmarks/gpu_check.sh, the prepared device check, in its CPU mode: the same steps on tiny settings, so
the script (its flags, the scripts it calls, the files and numbers it collects) cannot rot while no GPU is
lent. About 35 s on a 2-core CPU."""

from __future__ import annotations

import json
import os
import subprocess

from tests.helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
WHEELS_SCRIPT = ROOT / "benchmarks" / "gpu_wheels.sh"


def test_cpu_mode_runs_every_step_and_collects_the_numbers(tmp_path):
    out = tmp_path / "out"
    env = os.environ | {"OUT": str(out), "GPU_CHECK_WORK": str(tmp_path / "work"),
                        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets")}
    result = subprocess.run(["bash", str(SCRIPT), "--cpu"], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=240)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]

    files = {path.name for path in out.iterdir()}
    assert {"env.txt", "tests.log", "throughput.log", "step_overhead.log", "cifar10.log", "report.txt",
            "summary.json", "curves.png"} <= files
    assert len(files) <= 8  # what the device tool brings back from $OUT

    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "cpu"
    steps = summary["steps"]
    for name in ("env", "tests", "throughput_eager", "cifar10"):
        assert steps[name]["status"] == "ok", (name, steps[name])
    assert steps["throughput_compiled"]["status"].startswith("skipped")
    if (ROOT / "benchmarks" / "step_overhead.py").is_file():
        assert steps["overhead"]["status"] == "ok"
        assert "ms/step" in (out / "step_overhead.log").read_text()
    assert "wheels" not in steps  # nothing is installed off the device

    assert summary["versions"]["transformers"] and summary["versions"]["torch"]
    assert summary["tests"].get("skipped", 0) > 0 and not summary["tests"].get("failed")  # the tier collects

    eager = summary["throughput_eager"]
    assert eager["images_per_second"] > 0 and eager["model_only_images_per_second"] > 0
    assert 0 < eager["data_efficiency"] < 10

    cifar = summary["cifar10"]
    assert cifar["global_step"] >= 1 and cifar["images_per_second"] > 0
    assert 0 <= cifar["data_wait_fraction"] <= 1
    assert 0 <= cifar["eval_accuracy"] <= 1
    assert cifar["gpu_utilization"] is None  # no GPU here
    assert "accuracy" in (out / "report.txt").read_text()
    assert "cifar10_tiny" in log and "images/s" in log  # the table on stdout


def test_bad_arguments_are_refused_and_both_scripts_parse(tmp_path):
    result = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "usage" in result.stderr
    for script in (SCRIPT, WHEELS_SCRIPT):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
