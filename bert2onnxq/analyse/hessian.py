"""Q-BERT (Shen et al., AAAI 2020) Hessian sensitivity per encoder layer (bits from it: numerics/bits.py).

Torch only (no onnx): the Hessian needs autograd on the original PyTorch model, before export.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInput
from ..tasks import get_task

# the Linear weights of one BertLayer that the quantizer touches
LAYER_WEIGHTS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                 "intermediate.dense", "output.dense")


@dataclass
class Eigen:
    """Result of one eigen solve: the Rayleigh quotient v.Hv of the last unit vector (it keeps the
    eigenvalue's sign), how many Hessian-vector products it took, and the vector (for warm starts)."""

    value: float
    iterations: int
    converged: bool
    vector: list[torch.Tensor] = field(repr=False)


@dataclass
class LayerSensitivity:
    layer: int
    eigenvalues: list[float]  # top Hessian eigenvalue per data batch
    iterations: list[int]  # Hessian-vector products per batch
    converged: list[bool]
    seconds: float = 0.0  # wall time of this layer's eigen solves

    @property
    def mean(self) -> float:
        return float(np.mean(self.eigenvalues))

    @property
    def std(self) -> float:
        # population std: Q-BERT's spread of the top eigenvalue over the data
        return float(np.std(self.eigenvalues))

    @property
    def omega(self) -> float:
        """Q-BERT's Omega = |mean lambda| + std lambda."""
        return abs(self.mean) + self.std


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _unit(v: list[torch.Tensor]) -> list[torch.Tensor]:
    norm = torch.sqrt(_dot(v, v))
    return [x / norm for x in v]


def random_unit(params: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return _unit([torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device) for p in params])


def _live(grads, params):
    """The params the loss is nonlinear in, their gradient graphs, and their indices in `params`."""
    pairs = [(g, p) for g, p in zip(grads, params) if g is not None and g.requires_grad]
    live = [p for _, p in pairs]
    return [g for g, _ in pairs], live, [i for i, p in enumerate(params) if any(p is q for q in live)]


def _eigen(value: float, products: int, converged: bool, keep: list[int], vector, params) -> Eigen:
    """An Eigen whose vector covers all `params` (zero where the loss is at most linear)."""
    full = [torch.zeros_like(p) for p in params]
    for i, x in zip(keep, vector or []):
        full[i] = x
    return Eigen(value, products, converged, full)


def power_iteration(grads, params, *, max_iter: int = 50, tol: float = 1e-3, init=None, seed: int = 0) -> Eigen:
    """Largest-magnitude eigenvalue of the Hessian whose gradient graph is `grads` (autograd.grad of a loss
    w.r.t. `params` with create_graph=True): v <- Hv / |Hv|, Hv by a second backward (double backprop).

    The estimate is the Rayleigh quotient v.Hv. It stops when v is an eigenvector up to tol:
    |Hv|^2 - (v.Hv)^2 <= tol |Hv|^2 (the squared relative residual, about the relative error of the
    eigenvalue). A small change between iterations (PyHessian's test) is not enough: when a negative
    eigenvalue has almost the top's magnitude, v.Hv crawls and that test stops far from the answer.
    `init` (e.g. the previous batch's vector) warm-starts; else a seeded random vector.
    """
    grads, live, keep = _live(grads, params)
    if not live:  # the loss is at most linear in these params: the Hessian is zero
        return _eigen(0.0, 0, True, keep, None, params)
    v = _unit([init[i] for i in keep]) if init is not None else random_unit(live, seed)
    eig, iterations, converged = 0.0, 0, False
    for iterations in range(1, max(1, max_iter) + 1):
        hv = torch.autograd.grad(grads, live, grad_outputs=v, retain_graph=True)
        eig = float(_dot(hv, v))  # Rayleigh quotient: v has unit norm; keeps the sign
        norm2 = float(_dot(hv, hv))
        if norm2 == 0:
            return _eigen(0.0, iterations, True, keep, None, params)
        converged = norm2 - eig * eig <= tol * norm2
        if converged:
            break
        v = [x.detach() / norm2 ** 0.5 for x in hv]
    return _eigen(eig, iterations, converged, keep, v, params)


def lanczos(grads, params, *, max_iter: int = 50, tol: float = 1e-3, init=None, seed: int = 0) -> Eigen:
    """The same eigenpair as `power_iteration` (same start, same stop rule on the Ritz pair:
    |H y - theta y|^2 <= tol (theta^2 + |H y - theta y|^2)), by Lanczos with full reorthogonalisation:
    the Krylov space of k products holds the power iterate of step k, so it needs at most as many
    products, and far fewer when the top two eigenvalues are close. Keeps the k basis vectors."""
    grads, live, keep = _live(grads, params)
    if not live:
        return _eigen(0.0, 0, True, keep, None, params)
    basis = [_unit([init[i] for i in keep]) if init is not None else random_unit(live, seed)]
    alphas, betas = [], []
    theta, s, converged = 0.0, np.ones(1), False
    for _ in range(max(1, max_iter)):
        q = basis[-1]
        w = [x.detach() for x in torch.autograd.grad(grads, live, grad_outputs=q, retain_graph=True)]
        alphas.append(float(_dot(w, q)))
        for b in basis:  # full reorthogonalisation (twice is enough): the basis stays orthonormal in float32
            for _ in range(2):
                c = _dot(w, b)
                w = [x - c * y for x, y in zip(w, b)]
        beta = float(torch.sqrt(_dot(w, w)))
        t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        values, vectors = np.linalg.eigh(t)
        top = int(np.argmax(np.abs(values)))
        theta, s = float(values[top]), vectors[:, top]
        r2 = (beta * s[-1]) ** 2
        if theta == 0.0 and r2 == 0.0:  # H q = 0 on the start vector's whole Krylov space
            return _eigen(0.0, len(alphas), True, keep, None, params)
        converged = bool(r2 <= tol * (theta * theta + r2))
        if converged or beta <= 1e-12 * max(abs(theta), 1e-30):
            converged = True
            break
        betas.append(beta)
        basis.append([x / beta for x in w])
    y = _unit([sum(float(c) * b[j] for c, b in zip(s, basis)) for j in range(len(live))])
    return _eigen(theta, len(alphas), converged, keep, y, params)


SOLVERS = {"power": power_iteration, "lanczos": lanczos}
SOLVER = "lanczos"  # layer_sensitivities' default: the same eigenpair in fewer products (benchmarks/hessian_cost.py)


def unpadded_by_default(batches) -> bool:
    """QA windows run unpadded (long, and their loss should not see pads); short GLUE examples run faster padded."""
    return "start_positions" in batches[0]


def top_eigenvalue(loss_fn, params: list[torch.Tensor], *, max_iter: int = 50, tol: float = 1e-3, seed: int = 0,
                   init=None, solver: str = "power") -> Eigen:
    """Top (largest-magnitude) Hessian eigenvalue of loss_fn() w.r.t. params by power iteration or Lanczos."""
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return SOLVERS[solver](grads, params, max_iter=max_iter, tol=tol, init=init, seed=seed)


def encoder_layers(model):
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if layers is None:
        raise BadInput(f"{type(model).__name__} has no encoder.layer list; pass a BERT-style Hugging Face model")
    return layers


def layer_weights(model, layer: int) -> list[torch.Tensor]:
    modules = dict(encoder_layers(model)[layer].named_modules())
    return [modules[name].weight for name in LAYER_WEIGHTS]


def unpadded_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's mean loss with each example run at its own length: the padding's compute is skipped.
    Classification and regression are the padded batch's loss (masked keys add nothing); for QA the
    start/end softmax no longer spans the pad positions, so the loss depends on no other example."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    losses = [model(**{k: (v[i: i + 1, :n] if v.dim() == 2 else v[i: i + 1]) for k, v in batch.items()}).loss
              for i, n in enumerate(lengths)]
    return torch.stack(losses).mean()


def layer_sensitivities(model, batches, num_layers=None, *, max_iter: int = 50, tol: float = 1e-3, seed: int = 0,
                        progress=None, unpadded: bool | None = None, solver: str = SOLVER) -> list[LayerSensitivity]:
    """Top Hessian eigenvalue of each encoder layer's six Linear weights, per batch (labels inside).

    Per batch: one forward and one create_graph backward for all layers, then the top eigenpair per
    layer; each layer warm-starts from its eigenvector of the previous batch. Layers below the first
    analysed one run without a graph. Dropout is off (eval): the loss is a fixed function of the weights.
    `progress(label, total)` returns a callback advanced once per (layer, batch). `unpadded` runs each
    example at its own length (default: QA batches only; short GLUE examples run faster padded, with the
    same loss); `solver` is lanczos or power (benchmarks/hessian_cost.py compares them).
    """
    layers = encoder_layers(model)
    num_layers = len(layers) if num_layers is None else num_layers
    if not 1 <= num_layers <= len(layers):
        raise BadInput(f"num_layers must be 1..{len(layers)}, got {num_layers}")
    if not batches:
        raise BadInput("no calibration batches; pass at least one")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise BadInput("the Hessian analysis needs an fp32 model; load it with dtype=torch.float32")
    if not any(k in batches[0] for k in ("labels", "start_positions")):
        raise BadInput("batches carry no labels (or start/end positions); build them with calibration_batches")
    if solver not in SOLVERS:
        raise BadInput(f"unknown eigen solver '{solver}': choose {' or '.join(SOLVERS)}")
    if unpadded is None:
        unpadded = unpadded_by_default(batches)
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    weights = [layer_weights(model, i) for i in range(num_layers)]
    tick = progress("Hessian eigenvalues (layer x batch)", num_layers * len(batches)) if progress else None
    result = [LayerSensitivity(i, [], [], []) for i in range(num_layers)]
    vectors = [None] * num_layers
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for w in weights:
            for p in w:
                p.requires_grad_(True)
        flat = [p for w in weights for p in w]
        for batch in batches:
            loss = unpadded_loss(model, batch) if unpadded else model(**batch).loss
            grads = torch.autograd.grad(loss, flat, create_graph=True, allow_unused=True)
            for i, w in enumerate(weights):
                start = time.perf_counter()
                g = grads[i * len(LAYER_WEIGHTS): (i + 1) * len(LAYER_WEIGHTS)]
                eig = SOLVERS[solver](g, w, max_iter=max_iter, tol=tol, init=vectors[i], seed=seed + i)
                vectors[i] = eig.vector
                r = result[i]
                r.eigenvalues.append(eig.value)
                r.iterations.append(eig.iterations)
                r.converged.append(eig.converged)
                r.seconds += time.perf_counter() - start
                if tick:
                    tick(1)
            del loss, grads  # free this batch's double-backward graph before the next
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    return result


def _answer_positions(example, offsets, context_mask) -> tuple[int, int]:
    """Token span of the first gold answer in one window; (0, 0) = [CLS] when the window misses it (HF run_qa)."""
    if not example.answers:
        return 0, 0
    text = example.answers[0]
    start_char = example.answer_starts[0] if example.answer_starts else -1
    if start_char is None or start_char < 0:  # JSON without answer_start: first occurrence in the context
        start_char = example.context.find(text)
    ctx = np.flatnonzero(context_mask)
    if start_char < 0 or len(ctx) == 0:
        return 0, 0
    end_char = start_char + len(text)
    first, last = int(ctx[0]), int(ctx[-1])
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return 0, 0
    s = first
    while s <= last and offsets[s][0] <= start_char:
        s += 1
    e = last
    while e >= first and offsets[e][1] >= end_char:
        e -= 1
    return s - 1, e + 1


def calibration_batches(model_dir_or_hf_model, task_name, tokenizer=None, *, num_batches=10, batch_size=8,
                        data_dir=None, data_file=None, max_length=None, seed=0) -> list[dict[str, torch.Tensor]]:
    """Padded batches with labels from num_batches*batch_size TRAIN examples drawn at random (by seed) from the
    whole split; seed=None takes the first ones in file order. SQuAD: one window per drawn question's windows,
    shuffled, cut to num_batches*batch_size.

    The model (a folder or a loaded HF model) supplies the tokenizer when none is given and caps max_length.
    """
    if num_batches < 1 or batch_size < 1:
        raise BadInput(f"num_batches and batch_size must be positive, got {num_batches} and {batch_size}")
    if isinstance(model_dir_or_hf_model, (str, Path)):
        from transformers import AutoConfig

        source = str(model_dir_or_hf_model)
        config = AutoConfig.from_pretrained(source)
    else:
        config = model_dir_or_hf_model.config
        source = config.name_or_path
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    task = get_task(task_name)
    qa_model = (getattr(config, "architectures", None) or [""])[0].endswith("ForQuestionAnswering")
    if qa_model != (task.head == "question-answering"):
        raise BadInput(f"the model is {'a question-answering' if qa_model else 'a sequence-classification'} model "
                       f"but task {task.name} is not: pass the task the model was fine-tuned for")
    if task.num_labels is not None and config.num_labels != task.num_labels:
        raise BadInput(f"the model has {config.num_labels} labels but {task.name} needs {task.num_labels}; "
                       "pass the model fine-tuned for this task")
    max_length = min(max_length or task.default_max_length, getattr(config, "max_position_embeddings", 512))
    n = num_batches * batch_size
    if seed is None:
        examples = task.load_examples(data_dir=data_dir, data_file=data_file, split="train", limit=n)
    else:  # a random sample of the whole split: the head of a file can be one topic (SQuAD articles)
        examples = task.load_examples(data_dir=data_dir, data_file=data_file, split="train")
        pick = np.random.default_rng(seed).permutation(len(examples))[:n]
        examples = [examples[i] for i in sorted(pick)]
    enc = task.encode(examples, tokenizer, max_length=max_length)
    order = list(range(len(enc.features)))
    if seed is not None:
        order = np.random.default_rng(seed).permutation(len(order)).tolist()
    order = order[:n]  # SQuAD windows can outnumber the examples
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = []
    for b in range(0, len(order), batch_size):
        idx = order[b: b + batch_size]
        width = max(len(enc.features[f]["input_ids"]) for f in idx)  # pad per batch: no wasted compute
        batch = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            fill = pad_id if key == "input_ids" else 0
            rows = [np.pad(enc.features[f][key], (0, width - len(enc.features[f][key])), constant_values=fill)
                    for f in idx]
            batch[key] = torch.from_numpy(np.stack(rows).astype(np.int64))
        labels = [examples[enc.example_ids[f]] for f in idx]
        if task.head == "question-answering":
            spans = [_answer_positions(labels[k], enc.extra["offsets"][f], enc.extra["context_mask"][f])
                     for k, f in enumerate(idx)]
            batch["start_positions"] = torch.tensor([s for s, _ in spans], dtype=torch.long)
            batch["end_positions"] = torch.tensor([e for _, e in spans], dtype=torch.long)
        else:
            dtype = torch.float32 if task.head == "regression" else torch.long
            batch["labels"] = torch.tensor([ex.label for ex in labels], dtype=dtype)
        batches.append(batch)
    return batches
