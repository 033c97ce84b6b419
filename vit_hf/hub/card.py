"""The model card: output_dir/README.md, which the Hub shows and push_to_hub uploads with the model.

Written from what the run left in output_dir (recipe.yaml, eval_results.json, trainer_state.json,
config.json, curves.png), so it says what was trained, on what, how well, on which hardware and
within which budget, and how to load it. The YAML front matter is the Hub's metadata:
`library_name`, `pipeline_tag`, `tags`, `datasets` (Hub datasets only), `metrics` (the Hub ids of the
run's metrics, where one computes the same), `base_model` (when fine-tuned from the Hub) and a
`model-index` holding each metric of evaluation.metrics (type: that Hub id, with the arguments that make
it the same, e.g. f1 with average: macro; name: vit_hf's).
"""

from __future__ import annotations

import json
import os
import platform
import re
from pathlib import Path

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..metrics import metric_info
from ..outputs.runs import RunRecord, load_run
from ..recipe.durations import format_duration

TAGS = ["vit_hf", "vision", "image-classification", "vit"]
# owner/name or a canonical name: what a Hub repository id looks like (a local folder may look alike; see _hub_id).
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def write_model_card(output_dir: str | Path, model_id: str | None = None) -> Path:
    """output_dir/README.md; `model_id` (the Hub repo, when pushed) is what the usage snippet loads."""
    path = Path(output_dir) / "README.md"
    path.write_text(str(model_card(output_dir, model_id)))
    return path


def model_card(output_dir: str | Path, model_id: str | None = None):
    """A huggingface_hub.ModelCard for the run in output_dir."""
    run = load_run(output_dir)
    model_id = model_id or str(output_dir)
    data = card_data(run, Path(model_id).name)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{card_body(run, model_id)}")


def card_data(run: RunRecord, model_name: str):
    """The Hub metadata; the model-index comes from eval_results (huggingface_hub writes it)."""
    dataset = run.recipe.get("data", {}).get("dataset") or "unknown"
    pretrained = run.recipe.get("model", {}).get("pretrained")
    return ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=TAGS,
        datasets=[_hub_id(dataset)] if _hub_id(dataset) else None,
        metrics=hub_metric_ids(run),
        base_model=_hub_id(pretrained) if pretrained else None,
        eval_results=eval_results(run, dataset) or None,
    )


def eval_results(run: RunRecord, dataset: str) -> list:
    data = run.recipe.get("data", {})
    where = dict(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=_hub_id(dataset) or Path(dataset).name,
        dataset_name=Path(dataset).name,
        dataset_config=data.get("config"),
        dataset_split=data.get("eval_split"),
    )
    results = []
    for name in run.metric_names:
        info, value = metric_info(name), run.metric_value(name)
        if value is not None:
            results.append(EvalResult(metric_type=info.card_type, metric_name=info.card_name,
                                      metric_args=info.card_args, metric_value=value, **where))
    return results


def hub_metric_ids(run: RunRecord) -> list[str]:
    """The Hub metrics that compute the run's metrics (the card's `metrics:`), each once."""
    ids = [metric_info(name).card_type for name in run.metric_names if metric_info(name).on_hub]
    return list(dict.fromkeys(ids))


def _hub_id(name: str) -> str | None:
    """`name` when it can only be a Hub repository id, None when it is (or looks like) a local path."""
    return name if HUB_ID.match(name) and not Path(name).exists() else None


def card_body(run: RunRecord, model_id: str) -> str:
    sections = [
        f"# {Path(model_id).name}\n\n{_description(run)}",
        "## Results\n\n" + _results_table(run),
        "## How to use\n\n" + _usage(model_id, _model_config(run.path).get("model_type") == "vit_hf"),
        "## Training\n\n" + _training_facts(run),
    ]
    if run.recipe_text:
        sections.append(
            "## Recipe\n\nThe resolved recipe; `python -m vit_hf.run recipe.yaml` reruns it.\n\n"
            f"```yaml\n{run.recipe_text.rstrip()}\n```"
        )
    return "\n\n".join(sections) + "\n"


def _description(run: RunRecord) -> str:
    config = _model_config(run.path)
    model = run.recipe.get("model", {})
    if model.get("pretrained"):
        origin = f"fine-tuned from `{model['pretrained']}`"
    else:
        origin = f"trained from scratch ({model.get('preset')})"
    shape = ""
    if config:
        shape = (
            f": {config.get('num_hidden_layers')} layers, width {config.get('hidden_size')}, patch "
            f"{config.get('patch_size')}, {config.get('image_size')} px, {len(config.get('id2label', {}))} classes"
        )
    dataset = run.recipe.get("data", {}).get("dataset", "an image dataset")
    return f"A Vision Transformer {origin} on `{dataset}` with vit_hf and the Hugging Face Trainer{shape}."


def _results_table(run: RunRecord) -> str:
    rows = [(metric_info(name).label, run.metric_value(name)) for name in run.metric_names]
    rows.append(("eval loss", run.results.get("eval_loss")))
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in rows if value is not None]
    if run.best:
        lines.append(f"| best accuracy during training | {run.best[0]:.4f} (step {run.best[1]}) |")
    table = "\n".join(lines)
    figures = [f"![{alt}]({name})" for name, alt in [("curves.png", "training curves"),
                                                      ("confusion_matrix.png", "confusion matrix")]
               if (run.path / name).is_file()]
    return "\n\n".join([table, *figures])


def _usage(model_id: str, vit_hf_model: bool) -> str:
    """A conv-stem or GAP model is vit_hf's model type: importing vit_hf registers it with the Auto classes."""
    register = "import vit_hf  # registers the vit_hf model type (conv stem / pooled head)\n" if vit_hf_model else ""
    return (
        f"```python\n{register}from transformers import pipeline\n\n"
        f'classifier = pipeline("image-classification", model="{model_id}")\n'
        'classifier("image.jpg")\n```'
    )


def _training_facts(run: RunRecord) -> str:
    budget = run.recipe.get("budget", {}).get("time")
    facts = [
        ("hardware", describe_hardware()),
        ("budget", format_duration(budget) + " for the whole run" if budget else "none"),
        ("wall time", format_duration(run.wall_seconds) if run.wall_seconds else None),
        ("steps", f"{run.global_step:,}" if run.global_step is not None else None),
        ("epochs", f"{run.epoch:.2f}" if run.epoch is not None else None),
        ("images seen", f"{run.images_seen:,}" if run.images_seen else None),
        ("throughput", f"{run.images_per_second:,.0f} images/s" if run.images_per_second else None),
    ]
    return "\n".join(f"- {name}: {value}" for name, value in facts if value is not None)


def describe_hardware() -> str:
    """The accelerators this process sees (name and count), else the CPU model and core count."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU: {cpu_model()}, {os.cpu_count()} cores"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _model_config(output_dir: Path) -> dict:
    path = output_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
