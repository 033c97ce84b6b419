"""--prepare-data through the real entry point: the decode-once caches are built and nothing is trained; the
same command without it then trains from those caches, decoding nothing."""

from __future__ import annotations

import logging

from tests.helpers.datagen import make_imagefolder
from tests.helpers.recipes import tiny_recipe, write_recipe
from vit_hf.cli.run import main
from vit_hf.outputs.lock import LOCK_NAME


def cache_files(cache) -> dict[str, int]:
    """The finished cache shards: name -> inode (a shard decoded again would be a new file)."""
    return {str(path.relative_to(cache)): path.stat().st_ino for path in cache.glob("uint8-*/shard-*.arrow")}


def test_prepare_data_builds_the_caches_trains_nothing_and_the_run_after_it_reuses_them(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = make_imagefolder(tmp_path / "data", per_class=4, size=16)
    out, cache = tmp_path / "out", tmp_path / "cache"
    recipe = tiny_recipe(data, out, max_steps=2, eval_strategy="no", save_strategy="no", report_to="none")
    recipe["data"]["cache_dir"] = str(cache)
    path = write_recipe(tmp_path, recipe)

    assert main([str(path), "--prepare-data"]) == 0
    prepared = cache_files(cache)
    assert len(prepared) == 2  # the train split's cache and the eval split's, one shard each
    assert "the decode-once caches are ready" in caplog.text
    assert {p.name for p in out.iterdir()} <= {LOCK_NAME}  # no model, no checkpoint, no trainer state
    assert "loader memory" not in caplog.text  # no store was made of the caches

    caplog.clear()
    assert main([str(path)]) == 0
    assert caplog.text.count("cache: reusing") == 2 and "cache: decoding" not in caplog.text
    assert cache_files(cache) == prepared  # the same files, not decoded again
    assert (out / "model.safetensors").is_file()


def test_prepare_data_needs_no_gpu_for_a_recipe_that_decodes_on_one(tmp_path, caplog):
    # data.gpu_decode asks for CUDA when training; a node that only gets the data ready has none to use.
    caplog.set_level(logging.INFO)
    recipe = tiny_recipe(make_imagefolder(tmp_path / "data", per_class=2, size=16), tmp_path / "out")
    recipe["data"] |= {"loader": "decode", "gpu_decode": True}
    assert main([str(write_recipe(tmp_path, recipe)), "--prepare-data"]) == 0
    assert "has no cache to build" in caplog.text
