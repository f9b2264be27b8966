"""Quantization-aware fine-tuning with distillation: the integers chosen by training through the plan's grid.

The source Hugging Face model is wrapped (quantize/fake_quant.py) so that its forward pass computes what
the quantized ONNX file will compute: every planned Linear's weight is replaced by the float weight the graph multiplies with
(`quantize.runtime_weight`, from the same numerics that write the file: bits, granularity, symmetric or
not, ACIQ clip, OCS splits, two-level scales), its input by the 8-bit activation the kernel sees
(DynamicQuantizeLinear's per-tensor uint8 or the per-token int8 for the int8 GEMM; MatMulNBits' per-block int8), and the
embedding tables by their int8 rows (frozen). The grid is recomputed from the current weights every
few steps and after the last one, as convert recomputes it from the final weights, so the file holds
exactly what was trained. With `--rounding gptq` training starts from GPTQ's integers instead (each
weight where GPTQ's compensated weight sat in its rounding cell), on GPTQ's grid, which stays fixed (a grid recomputed from the rounded weights would move their range, and what was
rounded), and the file holds the nearest integers on that grid. Gradients pass straight through the rounding (STE). The loss is distillation from the FP32 model: KL between
softened logits (QA: start and end over the sequence; regression: squared error), plus optionally the
hidden states' squared error.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from ..errors import BadInput
from ..plan import QuantPlan
from .fake_quant import prepare, refresh_grids


@dataclass(frozen=True)
class FinetuneSettings:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-4  # a latent must move about half a step to change an integer (docs/finetune.md)
    temperature: float = 2.0
    hidden_weight: float = 0.0  # weight of the hidden states' MSE (0: logits only)
    seed: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    eval_every: int = 100  # steps between agreement checks on dev samples (0: never)
    eval_samples: int = 256
    refresh: int = 10  # steps between recomputing the grids from the weights (and after the last step)
    group_by_length: bool = True  # batches of similar lengths (train_batches): far less padding on QA windows
    keep: str = "last"  # "best": the checked step with the lowest held-out distillation loss (step 0 included)

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0 or self.hidden_weight < 0:
            raise BadInput("--finetune-steps, --finetune-batch-size, --finetune-lr and --finetune-temperature must be "
                           "positive, --finetune-hidden-weight >= 0")
        if self.keep not in ("last", "best"):
            raise BadInput(f"--finetune-keep is 'last' or 'best', not '{self.keep}'")
        if self.keep == "best" and not self.eval_every:
            raise BadInput("--finetune-keep best picks among the held-out checks: they are off (eval_every 0)")


def check_finetunable(plan: QuantPlan) -> None:
    """The plans whose runtime numerics the torch forward reproduces (one-line errors for the others)."""
    if plan.activations.bits and plan.activations.mode == "static":
        raise BadInput("--finetune trains through run-time 8-bit activations (dynamic or per-token): drop --act-calib static")
    if plan.activations.ocs_ratio or plan.activations.splits:
        raise BadInput("--finetune does not train through OCS activation splits: drop --ocs-activations")
    if plan.rounding.get("method") == "gptq" and any(t.ocs_ratio for t in plan.weights):
        raise BadInput("--finetune starts from GPTQ's grid, which OCS weight splits recompute from the weights at "
                       "every step: use --rounding nearest with --method ocs, or another method")


def _named_latents(hf_model) -> dict:
    """{parameter name: the tensor that holds it} of a (prepared) model: parametrized weights by their latent
    original, under the plain name the ONNX file gives them."""
    state = {}
    for name, module in hf_model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            state[f"{name}.{pname}" if name else pname] = p
        for pname, plist in getattr(module, "parametrizations", {}).items():
            state[f"{name}.{pname}"] = plist.original
    return {k: p for k, p in state.items() if ".parametrizations." not in k}


def latent_state(hf_model) -> dict[str, np.ndarray]:
    """{parameter name: float32 array} in torch's layout: the latent weights, which the plan's rule
    quantizes to what was trained."""
    return {k: p.detach().cpu().numpy().astype(np.float32) for k, p in _named_latents(hf_model).items()}


def writable(model: ir.Model) -> set[str]:
    """Initializers a parameter can be written back to: the exporter stores equal constants once (a tiny or
    freshly initialised model's zero biases, unit LayerNorm weights) and an initializer read by several
    nodes would move them all, so those parameters stay frozen."""
    return {name for name, v in model.graph.initializers.items() if len(list(v.uses())) == 1}


def write_back(model: ir.Model, student, teacher) -> int:
    """Replace the FP32 graph's initializers by the student's latent parameters, in the layout the file
    keeps each one (the exporter stores MatMul weights transposed, Gemm weights not), found by matching the
    teacher's values; how many were replaced. A file that does not hold the teacher's values was exported
    from another model."""
    original, targets = latent_state(teacher), writable(model)
    done = 0
    for name, array in latent_state(student).items():
        value = model.graph.initializers.get(name)
        if name not in targets:
            continue
        stored = value.const_value.numpy()
        if stored.shape == original[name].shape and np.array_equal(stored, original[name]):
            new = array
        elif stored.shape == original[name].T.shape and np.array_equal(stored, original[name].T):
            new = np.ascontiguousarray(array.T)
        else:
            raise BadInput(f"'{name}' in the ONNX file differs from the Hugging Face model's: pass the model this ONNX "
                           "was exported from with --hf-model")
        value.const_value = ir.tensor(new, name=name)
        done += 1
    return done


def train_batches(lengths: np.ndarray, batch_size: int, rng, grouped: bool = True, megabatch: int = 50) -> list[np.ndarray]:
    """One pass over the examples in full batches (the remainder of a shuffle is dropped). Grouped, as
    Hugging Face Trainer's group_by_length: each run of `megabatch` batches of the shuffle is sorted by
    length before it is cut, so a batch pads to a length close to its own, and the batches are shuffled."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    order = order[: len(order) - len(order) % batch_size or len(order)]
    if not grouped:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches, span = [], batch_size * megabatch
    for start in range(0, len(order), span):
        chunk = order[start: start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _batch(features: list[dict], idx) -> dict:
    import torch

    chunk = [features[i] for i in idx]
    width = max(len(f["input_ids"]) for f in chunk)
    out = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        arr = np.zeros((len(chunk), width), np.int64)
        for r, f in enumerate(chunk):
            arr[r, : len(f[key])] = f[key]
        out[key] = torch.from_numpy(arr)
    return out


def _outputs(model, batch, hidden: bool):
    out = model(**batch, output_hidden_states=hidden)
    logits = [out.logits] if hasattr(out, "logits") and out.logits is not None else [out.start_logits, out.end_logits]
    return logits, (out.hidden_states if hidden else None)


def distillation_loss(student, teacher, mask, head: str, temperature: float):
    """KL(teacher || student) on softened logits x T^2 (QA: over the real tokens, start and end); MSE for regression."""
    import torch
    import torch.nn.functional as F

    total = 0.0
    for s, t in zip(student, teacher):
        if head == "regression":
            total = total + F.mse_loss(s, t)
            continue
        if head == "question-answering":
            s, t = s.masked_fill(mask == 0, -1e4), t.masked_fill(mask == 0, -1e4)
        p = F.softmax(t / temperature, dim=-1)
        total = total + torch.sum(p * (F.log_softmax(t / temperature, dim=-1) - F.log_softmax(s / temperature, dim=-1)),
                                  dim=-1).mean() * temperature**2
    return total / len(student)


def scored(model, features: list[dict], batch_size: int = 32) -> list[tuple]:
    """`model`'s (attention mask, logits) on `features`, batch by batch, without gradients."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = _batch(features, range(start, min(start + batch_size, len(features))))
            out.append((batch["attention_mask"], _outputs(model, batch, False)[0]))
    return out


def predictions(batches: list[tuple], head: str) -> list:
    """Per feature what was predicted (`scored`): the score (regression), the class, or QA's (start, end) over real tokens."""
    out = []
    for mask, logits in batches:
        if head == "regression":
            out.extend(logits[0].reshape(-1).tolist())
            continue
        picks = [(a.masked_fill(mask == 0, -1e4) if head == "question-answering" else a).argmax(-1).tolist() for a in logits]
        out.extend(zip(*picks))
    return out


def held_out_check(student, dev: list[dict], teacher: list[tuple], head: str, temperature: float) -> tuple[float, float]:
    """On the held-out features `dev` (the teacher's `scored` outputs on them): the student's agreement with FP32
    in % (the same class, QA's same start and end, regression within 10%) and its mean distillation loss."""
    got = scored(student, dev)
    mine, want = predictions(got, head), predictions(teacher, head)
    if head == "regression":
        same = sum(abs(s - t) <= 0.1 * (1 + abs(t)) for s, t in zip(mine, want))
    else:
        same = sum(s == t for s, t in zip(mine, want))
    loss = sum(float(distillation_loss(s, t, mask, head, temperature)) * len(mask) for (mask, s), (_, t) in zip(got, teacher))
    return 100.0 * same / max(len(want), 1), loss / max(len(dev), 1)


def finetune(model: ir.Model, plan: QuantPlan, loaded, train: list[dict], settings: FinetuneSettings, data: str,
             log=None, progress=None, start: dict | None = None):
    """Fine-tune `loaded.model` (export.LoadedModel) through the plan's grid on `train` features, distilling
    from a frozen copy of itself, and write the latent weights into `model` (the FP32 graph, in place).
    A seeded slice of the train features is held out to report agreement with FP32 as training goes.
    `start` {weight: QuantizedTensor}: GPTQ's integers, which a GPTQ plan starts from (module docstring).
    Returns (the recipe record the plan keeps, the fake-quant student)."""
    import copy

    import torch

    settings.check()
    check_finetunable(plan)
    if (plan.rounding.get("method") == "gptq") != bool(start):
        raise ValueError("a GPTQ plan fine-tunes from its GPTQ integers (start), and only a GPTQ plan does")
    if not train:
        raise BadInput("--finetune found no train examples: check --task and its data (--data-dir, or --calib-file for squad)")
    torch.manual_seed(settings.seed)
    threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        teacher = loaded.model.eval()
        student = prepare(copy.deepcopy(teacher), plan, start).eval()  # eval: no dropout, so the forward is the file's
        for p in teacher.parameters():
            p.requires_grad_(False)
        targets = writable(model) - {t.name for t in plan.embeddings}  # tables stay frozen (module docstring)
        trained = [p for name, p in _named_latents(student).items() if name in targets]
        for name, p in _named_latents(student).items():
            p.requires_grad_(name in targets)
        optimizer = torch.optim.AdamW(trained, lr=settings.lr, weight_decay=0.0)
        warmup = max(1, settings.steps // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (settings.steps - s) / max(1, settings.steps - warmup))))
        rng = np.random.default_rng(settings.seed)
        shuffled = rng.permutation(len(train))
        held = min(settings.eval_samples, len(train) // 5) if settings.eval_every else 0
        dev, train = [train[i] for i in shuffled[:held]], [train[i] for i in shuffled[held:]]
        lengths, batches = np.array([len(f["input_ids"]) for f in train]), []
        hidden = settings.hidden_weight > 0
        history, losses, tokens = [], [], 0
        spent = {"checks": 0.0, "refresh": 0.0}  # where the time goes besides the steps themselves
        began = time.perf_counter()
        want = scored(teacher, dev) if dev and settings.eval_every else []
        best = {"loss": math.inf, "step": None, "state": None}

        def check(step: int) -> None:
            """Score the student as it would ship now on the held-out features; remember the best for keep=best."""
            t0 = time.perf_counter()
            if step % settings.refresh and step != settings.steps:
                refresh_grids(student)
            a, held_loss = held_out_check(student, dev, want, loaded.head, settings.temperature)
            history.append({"step": step, "agreement": round(a, 2), "held_out_loss": round(held_loss, 5),
                            **({"loss": round(float(np.mean(losses[-settings.eval_every:])), 5)} if step else {})})
            if settings.keep == "best" and held_loss < best["loss"]:
                best.update(loss=held_loss, step=step, state={k: v.detach().clone() for k, v in student.state_dict().items()})
            spent["checks"] += time.perf_counter() - t0
            if log:
                log(f"step {step}/{settings.steps}: " + (f"loss {history[-1]['loss']:.4f}, " if step else "")
                    + f"agreement with FP32 {a:.2f}%, distillation loss {held_loss:.4f} on {len(dev)} held-out train features"
                    + (f" ({time.perf_counter() - began:.0f} s)" if step else ""))

        if want:
            check(0)
        tick = progress("fine-tuning", settings.steps) if progress else None
        for step in range(1, settings.steps + 1):
            if not batches:  # a new pass
                batches = train_batches(lengths, settings.batch_size, rng, settings.group_by_length)[::-1]
            batch = _batch(train, batches.pop())
            tokens += int(batch["attention_mask"].sum())
            with torch.no_grad():
                t_logits, t_hidden = _outputs(teacher, batch, hidden)
            s_logits, s_hidden = _outputs(student, batch, hidden)
            loss = distillation_loss(s_logits, t_logits, batch["attention_mask"], loaded.head, settings.temperature)
            if hidden:
                loss = loss + settings.hidden_weight * sum(torch.nn.functional.mse_loss(s, t) for s, t in zip(s_hidden, t_hidden)) / len(s_hidden)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % settings.refresh == 0 or step == settings.steps:
                t0 = time.perf_counter()
                refresh_grids(student)
                spent["refresh"] += time.perf_counter() - t0
            losses.append(loss.item())
            if tick:
                tick(1)
            if want and (step % settings.eval_every == 0 or step == settings.steps):
                check(step)
        kept = settings.steps
        if settings.keep == "best" and not want and log:
            log("--finetune-keep best: too few train examples to hold any out, so the last step is kept")
        if best["step"] is not None and best["step"] != settings.steps:  # keep=best, and an earlier check was better
            student.load_state_dict(best["state"])
            refresh_grids(student)
            kept = best["step"]
            if log:
                log(f"kept step {kept}: the lowest held-out distillation loss of the checks ({best['loss']:.4f})")
        seconds = time.perf_counter() - began
        replaced = write_back(model, student, teacher)
    finally:
        torch.set_num_threads(threads)
    begin = ("GPTQ's integers (latent: GPTQ's compensated weights within their cells), on GPTQ's grid, kept" if start else
             f"the FP32 weights, on the plan's grid recomputed every {settings.refresh} steps")
    return {**asdict(settings), "data": data, "teacher": "the FP32 source model (distillation)", "start": begin,
            "source_model": str(loaded.source), "examples": len(train), "held_out": len(dev), "tokens": tokens, "kept_step": kept,
            "seconds": round(seconds, 1), "check_seconds": round(spent["checks"], 1), "refresh_seconds": round(spent["refresh"], 1),
            "loss_first": round(losses[0], 5), "loss_last": round(float(np.mean(losses[-max(1, settings.steps // 20):])), 5),
            "agreement": history, "parameters_written": replaced, "torch_threads": settings.threads or threads,
            "steps_per_second": round(settings.steps / seconds, 3) if seconds > 0 else math.inf}, student


@dataclass(frozen=True)
class FinetuneJob:
    """What `convert --finetune` needs beyond the plan: the recipe, the task and its train data, and
    the Hugging Face model the FP32 ONNX came from (None: the one its metadata names)."""

    settings: FinetuneSettings
    task: str
    data_dir: object = None
    data_file: object = None
    hf_model: str | None = None


def source_model(fp32_path, source: str, hf_model: str | None) -> str:
    """The Hugging Face folder to fine-tune: --hf-model, the convert source itself, or the export's record."""
    from pathlib import Path

    from ..onnx_io import model_metadata

    if hf_model:
        return hf_model
    if not str(source).endswith(".onnx") and not (Path(source) / "model.onnx").is_file():
        return source  # convert exported this HF model itself
    recorded = model_metadata(fp32_path).get("source_model")
    if not recorded or not (Path(recorded) / "config.json").is_file():
        raise BadInput(f"--finetune needs the Hugging Face model this ONNX was exported from, and "
                       f"'{recorded or 'none recorded'}' is not a model folder here: pass it with --hf-model DIR")
    return recorded


def task_features(task, tokenizer, job: FinetuneJob, count: int) -> tuple[list[dict], str]:
    """`count` train examples of the task in a seeded shuffle, encoded; and a line saying what they are."""
    examples = task.load_examples(data_dir=job.data_dir, data_file=job.data_file, split="train")
    order = np.random.default_rng(job.settings.seed).permutation(len(examples))[:count]
    features = task.encode([examples[i] for i in order], tokenizer, max_length=task.default_max_length).features
    return features, (f"{task.name} train split: {len(order)} of {len(examples)} examples in a shuffle with seed "
                      f"{job.settings.seed} ({len(features)} features)")


def run_finetune(model: ir.Model, plan: QuantPlan, fp32_path, source: str, job: FinetuneJob, log=None, progress=None,
                 start=None) -> dict:
    """convert --finetune: load the source model, check it fits the task, fine-tune, write back; the record.
    `start() -> {weight: QuantizedTensor}`: a GPTQ plan's integers (finetune()), made once the checks passed."""
    from ..export import load_hf_model
    from ..tasks import get_task

    job.settings.check()  # before the model and data load (finetune() checks again for direct callers)
    check_finetunable(plan)
    task = get_task(job.task)
    loaded = load_hf_model(source_model(fp32_path, source, job.hf_model))
    labels = loaded.model.config.num_labels if loaded.head != "question-answering" else None
    if loaded.head != task.head or (task.num_labels is not None and labels != task.num_labels):
        raise BadInput(f"the model is a {loaded.head} model with {labels or 'no'} labels, but --task {job.task} is "
                       f"{task.head} with {task.num_labels or 'no'} labels: fine-tune on the task the model was trained for")
    if task.head == "classification":
        from ..tasks.glue import label_mapping

        mapping, why = label_mapping(task, loaded.model.config.id2label)
        if mapping is None:
            raise BadInput(f"--finetune on {job.task}: {why}: fine-tune on the task the model was trained for")
    s = job.settings
    features, data = task_features(task, loaded.tokenizer, job, s.steps * s.batch_size + s.eval_samples)
    record, _ = finetune(model, plan, loaded, features, s, data, log=log, progress=progress,
                         start=start() if start else None)
    return record
