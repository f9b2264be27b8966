"""convert's fine-tuning options (--finetune and its recipe), kept beside the command."""

from __future__ import annotations

import click
import cloup

from ..quantize.finetune import FinetuneSettings

_D = FinetuneSettings()
RECIPE = ("finetune_steps", "finetune_batch_size", "finetune_lr", "finetune_temperature", "finetune_hidden_weight",
          "finetune_seed", "finetune_threads", "finetune_group_by_length", "finetune_keep")

finetune_options = cloup.option_group(
    "Quantization-aware fine-tuning (--finetune; every method, Q-BERT as the paper does it)",
    cloup.option("--finetune/--no-finetune", default=False, show_default=True,
                 help="Train the source Hugging Face model through the plan's exact grid (fake quantization, straight "
                      "through), distilled from its FP32 self on --task's train split, then quantize the trained weights."),
    cloup.option("--finetune-steps", type=click.IntRange(1), default=_D.steps, show_default=True),
    cloup.option("--finetune-batch-size", type=click.IntRange(1), default=_D.batch_size, show_default=True),
    cloup.option("--finetune-lr", type=click.FloatRange(min=0, min_open=True), default=_D.lr, show_default=True),
    cloup.option("--finetune-temperature", type=click.FloatRange(min=0, min_open=True), default=_D.temperature,
                 show_default=True, help="Distillation temperature of the softened logits."),
    cloup.option("--finetune-hidden-weight", type=click.FloatRange(min=0), default=_D.hidden_weight, show_default=True,
                 help="Weight of the hidden states' squared error in the loss (0: logits only)."),
    cloup.option("--finetune-seed", type=int, default=_D.seed, show_default=True),
    cloup.option("--finetune-group-by-length/--no-finetune-group-by-length", default=_D.group_by_length, show_default=True,
                 help="Batches of examples of similar lengths (cut from runs of 50 shuffled batches): less padding."),
    cloup.option("--finetune-keep", type=click.Choice(["last", "best"]), default=_D.keep, show_default=True,
                 help="The weights to ship: the last step's, or those of the held-out check (every 100 steps, and "
                      "step 0) with the lowest distillation loss."),
    cloup.option("--finetune-threads", type=click.IntRange(0), default=_D.threads, show_default=True,
                 help="torch threads (0: torch's default)."),
)


def finetune_job(p: dict):
    """The FinetuneJob of convert's options, or None; an option of the recipe without --finetune is an error."""
    from ..errors import BadInput
    from ..quantize.finetune import FinetuneJob

    ctx = click.get_current_context()
    given = [n for n in RECIPE if ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE]
    if not p["finetune"]:
        if given:
            raise BadInput(f"--{given[0].replace('_', '-')} applies with --finetune: add --finetune or drop it")
        if ctx.get_parameter_source("hf_model") == click.core.ParameterSource.COMMANDLINE and p["method"] != "qbert":
            raise BadInput("--hf-model applies to --method qbert or --finetune: drop it or add one of them")
        return None
    if not p["task"]:
        raise BadInput("--finetune trains on the task's train split: pass --task and its data (--data-dir, or "
                       "--calib-file for squad)")
    if p["max_drop"] is not None:
        raise BadInput("--finetune does not combine with --max-drop yet: fine-tune the plan --max-drop chose, with --plan")
    settings = FinetuneSettings(steps=p["finetune_steps"], batch_size=p["finetune_batch_size"], lr=p["finetune_lr"],
                                temperature=p["finetune_temperature"], hidden_weight=p["finetune_hidden_weight"],
                                seed=p["finetune_seed"], threads=p["finetune_threads"],
                                group_by_length=p["finetune_group_by_length"], keep=p["finetune_keep"])
    return FinetuneJob(settings, p["task"], p["data_dir"], p["calib_file"], str(p["hf_model"]) if p["hf_model"] else None)
