"""Two runs into one output_dir: the second (training or --eval-only) stops at once with exit 2, naming
the first; a run killed with kill -9 leaves no stale lock behind."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.outputs.lock import OutputDirBusy, output_dir_lock

# vit_hf.outputs.lock as a run takes it; the package's __init__ (which imports transformers, seconds) is skipped.
HOLD = """
import sys, time, types
package = types.ModuleType("vit_hf")
package.__path__ = ["vit_hf"]
sys.modules["vit_hf"] = package
from vit_hf.outputs.lock import output_dir_lock
with output_dir_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def other_run(tmp_path):
    """Another process holding output_dir's lock, as a run does for its whole length."""
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_into_the_same_output_dir_stops_naming_the_first(tmp_path, other_run, tiny_pretrained, capsys):
    recipe = write_recipe(tmp_path, tiny_recipe(make_imagefolder(tmp_path / "data", per_class=2), tmp_path / "out"))
    assert main([str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"is in use by another vit_hf run (pid {other_run.pid} on " in err
    assert "choose another training.output_dir" in err
    assert not (tmp_path / "out" / "recipe.yaml").exists()  # stopped before writing anything
    assert main([str(recipe), "--eval-only", "--model.pretrained", str(tiny_pretrained)]) == 2
    assert f"pid {other_run.pid}" in capsys.readouterr().err


def test_kill_9_leaves_no_stale_lock(tmp_path, other_run):
    with pytest.raises(OutputDirBusy), output_dir_lock(tmp_path / "out"):
        pass
    other_run.send_signal(signal.SIGKILL)
    other_run.wait()
    with output_dir_lock(tmp_path / "out"):  # the kernel released it with the process
        pass
