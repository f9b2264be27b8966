"""Q-BERT's Hessian analysis (power iteration on Hessian-vector products) and bit allocation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from conftest import GLUE_DIR, SHARED, SHARED_MODELS, make_tiny_bert, needs_shared

from bert2onnxq.analyse import hessian
from bert2onnxq.errors import BadInput
from bert2onnxq.numerics import bits as allocation

SQUAD_TRAIN = SHARED / "data" / "squad" / "dev-v1.1-train36.json"


def _quadratic(eigenvalues, seed=0):
    """loss(theta) = 1/2 theta^T A theta over two parameter tensors, A = Q diag(eigenvalues) Q^T: Hessian A."""
    n = len(eigenvalues)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    a = torch.tensor(q @ np.diag(eigenvalues) @ q.T, dtype=torch.float64)
    p1 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    p2 = torch.randn(n - 12, dtype=torch.float64, requires_grad=True)

    def loss():
        theta = torch.cat([p1.reshape(-1), p2])
        return 0.5 * theta @ a @ theta
    return loss, [p1, p2]


@pytest.mark.parametrize("eigenvalues", [
    [9.0, 4.0, 3.0, 2.5, 1.0, 0.5, 0.1, 0.0, -0.2, -1.0, -2.0, -3.0, 0.3, 0.7, 1.5, 2.0],
    [-7.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.1, 0.0, -0.2, -1.0, -2.0, -3.0, 0.3, 0.7, 1.5, 2.0],  # negative on top
], ids=["positive", "negative"])
def test_power_iteration_finds_top_eigenvalue_of_known_quadratic(eigenvalues):
    loss, params = _quadratic(eigenvalues)
    eig = hessian.top_eigenvalue(loss, params, max_iter=200, tol=1e-6)
    top = max(eigenvalues, key=abs)
    assert eig.converged
    assert eig.value == pytest.approx(top, rel=0.01)  # the sign is kept (Rayleigh quotient)
    # the vector is the top eigenvector: H v = lambda v
    hv = torch.autograd.grad(torch.autograd.grad(loss(), params, create_graph=True), params, grad_outputs=eig.vector)
    residual = sum(float(((h - top * v) ** 2).sum()) for h, v in zip(hv, eig.vector)) ** 0.5
    assert residual < 0.05 * abs(top)


def test_power_iteration_warm_start_and_linear_loss():
    loss, params = _quadratic([6.0, 2.0, 1.0] + [0.5] * 13)
    cold = hessian.top_eigenvalue(loss, params, max_iter=200, tol=1e-9)
    warm = hessian.top_eigenvalue(loss, params, max_iter=200, tol=1e-9, init=cold.vector)
    assert warm.value == pytest.approx(6.0, rel=1e-6) and warm.iterations < cold.iterations
    p = torch.ones(3, requires_grad=True)
    flat = hessian.top_eigenvalue(lambda: (2 * p).sum(), [p])
    assert flat.value == 0.0  # a linear loss has a zero Hessian


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    src = make_tiny_bert(tmp_path_factory.mktemp("hess") / "cls", "classification")
    model = AutoModelForSequenceClassification.from_pretrained(src, attn_implementation="eager").eval()
    gen = torch.Generator().manual_seed(1)
    batches = [{"input_ids": torch.randint(5, 60, (4, 9), generator=gen),
                "attention_mask": torch.ones(4, 9, dtype=torch.long),
                "token_type_ids": torch.zeros(4, 9, dtype=torch.long),
                "labels": torch.randint(0, 3, (4,), generator=gen)} for _ in range(2)]
    return model, batches


def test_power_iteration_matches_exact_hessian_of_a_bert_weight(tiny_classifier):
    """Double backprop through a real (tiny) BertLayer vs the explicit Hessian's eigenvalues."""
    model, batches = tiny_classifier
    name = "bert.encoder.layer.1.attention.output.dense.weight"
    weight = dict(model.named_parameters())[name]
    for p in model.parameters():
        p.requires_grad_(False)

    def loss_of(w):
        return torch.func.functional_call(model, {name: w}, kwargs=batches[0]).loss

    w0 = weight.detach().clone()
    exact = torch.autograd.functional.hessian(loss_of, w0, vectorize=True).reshape(w0.numel(), -1)
    eigenvalues = torch.linalg.eigvalsh((exact + exact.T) / 2)
    top = float(eigenvalues[eigenvalues.abs().argmax()])
    weight.requires_grad_(True)
    try:
        eig = hessian.top_eigenvalue(lambda: model(**batches[0]).loss, [weight], max_iter=500, tol=1e-7)
    finally:
        weight.requires_grad_(False)
    assert eig.value == pytest.approx(top, rel=0.01)


def test_layer_sensitivities_deterministic_and_omega(tiny_classifier):
    model, batches = tiny_classifier
    flags = [p.requires_grad for p in model.parameters()]
    seen = []
    first = hessian.layer_sensitivities(model, batches, max_iter=30, seed=3,
                                        progress=lambda label, total: (lambda n: seen.append((total, n))))
    second = hessian.layer_sensitivities(model, batches, max_iter=30, seed=3)
    assert [s.eigenvalues for s in first] == [s.eigenvalues for s in second]
    assert len(first) == 2 and all(len(s.eigenvalues) == 2 for s in first)
    assert seen == [(4, 1)] * 4  # one tick per (layer, batch)
    for s in first:
        lam = np.array(s.eigenvalues)
        assert s.omega == pytest.approx(abs(lam.mean()) + lam.std())
    assert [p.requires_grad for p in model.parameters()] == flags  # restored
    assert not model.training


def test_layer_sensitivities_agree_with_one_layer_at_a_time(tiny_classifier):
    """The shared per-batch graph gives each layer's own Hessian block (not cross terms)."""
    model, batches = tiny_classifier
    shared = hessian.layer_sensitivities(model, batches[:1], max_iter=40, seed=5)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in (0, 1):
        params = hessian.layer_weights(model, layer)
        for p in params:
            p.requires_grad_(True)
        alone = hessian.top_eigenvalue(lambda: model(**batches[0]).loss, params, max_iter=40, seed=5 + layer,
                                       solver="lanczos")
        for p in params:
            p.requires_grad_(False)
        # same start, same products: the same iterates (converged or not)
        assert shared[layer].eigenvalues[0] == pytest.approx(alone.value, rel=1e-4)
        assert shared[layer].iterations[0] == alone.iterations


def test_unpadded_loss_skips_the_padding(tiny_classifier, tmp_path):
    """Classification: the padded batch's loss. QA: the batch loss with the pad positions out of the
    start/end softmax (so, unlike the padded loss, it does not depend on the batch's width)."""
    from transformers import AutoModelForQuestionAnswering

    model, batches = tiny_classifier
    batch = {k: v.clone() for k, v in batches[0].items()}
    lengths = [9, 5, 7, 3]
    for i, n in enumerate(lengths):
        batch["attention_mask"][i, n:] = 0
        batch["input_ids"][i, n:] = 0
    with torch.no_grad():
        assert float(hessian.unpadded_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-5)
    qa = AutoModelForQuestionAnswering.from_pretrained(make_tiny_bert(tmp_path / "qa", "question-answering"),
                                                       attn_implementation="eager").eval()
    batch.pop("labels")
    starts, ends = torch.tensor([2, 1, 4, 0]), torch.tensor([5, 3, 6, 2])
    with torch.no_grad():
        out = qa(**batch)
        pad = batch["attention_mask"] == 0
        ce = torch.nn.functional.cross_entropy
        want = (ce(out.start_logits.masked_fill(pad, -torch.inf), starts)
                + ce(out.end_logits.masked_fill(pad, -torch.inf), ends)) / 2
        got = hessian.unpadded_loss(qa, {**batch, "start_positions": starts, "end_positions": ends})
        padded = qa(**batch, start_positions=starts, end_positions=ends).loss
    assert float(got) == pytest.approx(float(want), rel=1e-5)
    assert abs(float(got) - float(padded)) > 1e-3  # the pad logits did enter the padded loss


def test_layer_sensitivities_bad_input(tiny_classifier):
    model, batches = tiny_classifier
    with pytest.raises(BadInput, match="no labels"):
        hessian.layer_sensitivities(model, [{k: v for k, v in batches[0].items() if k != "labels"}])
    with pytest.raises(BadInput, match="no calibration batches"):
        hessian.layer_sensitivities(model, [])


# --- allocation -------------------------------------------------------------------------------------------


def _monotone(bits, omegas):
    return all(bits[i] >= bits[j] for i in range(len(bits)) for j in range(len(bits)) if omegas[i] > omegas[j])


def test_allocate_bits_meets_budget_exactly_and_is_monotone():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(2, 9))
        omegas = list(rng.exponential(size=n) * 10)
        choices = sorted(rng.choice([2, 3, 4, 5, 6, 8], size=int(rng.integers(2, 4)), replace=False).tolist())
        avg = float(rng.integers(choices[0] * n, choices[-1] * n + 1)) / n  # reachable by some assignment?
        bits = allocation.allocate_bits(omegas, avg, choices)
        assert set(bits) <= set(choices) and _monotone(bits, omegas)
        # the best any monotone assignment can do under the budget, by brute force
        best = max(sum(b) for b in itertools.product(choices, repeat=n)
                   if sum(b) <= avg * n + 1e-9 and _monotone(b, omegas))
        assert sum(bits) == best
    # the Q-BERT setting: 6 layers, average 3 over 2,3,4 -> exactly 18 bits
    bits = allocation.allocate_bits([5.0, 9.0, 1.0, 3.0, 7.0, 2.0], 3, (2, 3, 4))
    assert bits == [4, 4, 2, 2, 4, 2]  # without errors: the most bits on the most sensitive layers


def test_allocate_bits_uneven_steps_and_sizes():
    # 2,4,5 with 3 layers and avg 11/3: greedy from the top (5,5,2 = 12 too many; 5,4,2 = 11) is exact here,
    # but 4 layers at avg 3.75 = 15 needs 5,4,4,2 or 5,5,... -- searched, not greedy
    bits = allocation.allocate_bits([4.0, 3.0, 2.0, 1.0], 3.75, (2, 4, 5))
    assert sum(bits) == 15 and _monotone(bits, [4.0, 3.0, 2.0, 1.0])
    # size-weighted budget: one big layer counts more
    bits = allocation.allocate_bits([1.0, 2.0], 3.0, (2, 4), layer_sizes=[3, 1])
    assert bits == [2, 4]  # 3*2 + 1*4 = 10 <= 12; 4 on the big one would be 14
    with pytest.raises(BadInput, match="below the smallest"):
        allocation.allocate_bits([1.0, 2.0], 1.5, (2, 3))


def test_allocate_bits_min_cost_is_the_exact_minimum():
    rng = np.random.default_rng(1)
    for trial in range(200):
        n = int(rng.integers(1, 7))
        choices = sorted(rng.choice([2, 3, 4, 5, 8], size=int(rng.integers(2, 4)), replace=False).tolist())
        costs = [{b: float(rng.exponential()) * 4.0 ** -b for b in choices} for _ in range(n)]
        sizes = [int(s) for s in rng.integers(1, 5, size=n)]
        avg = float(rng.uniform(choices[0], choices[-1]))
        bits = allocation.allocate_bits_min_cost(costs, avg, sizes)
        assert np.dot(bits, sizes) <= avg * sum(sizes) + 1e-9
        best = min(sum(c[b] for c, b in zip(costs, assign)) for assign in itertools.product(choices, repeat=n)
                   if np.dot(assign, sizes) <= avg * sum(sizes) + 1e-9)
        assert sum(c[b] for c, b in zip(costs, bits)) == pytest.approx(best, rel=1e-12)
    # Omega x 4^-b (a b-bit grid's error variance): the top layer's 4th bit is worth less than a 3rd bit
    # on the others, so the rank rule's 4,4,4,2,2,2 gives way to
    omegas = [307.5, 502.5, 410.4, 205.9, 188.0, 27.5]
    costs = [{b: o * 4.0 ** -b for b in (2, 3, 4)} for o in omegas]
    assert allocation.allocate_bits_min_cost(costs, 3.0) == [3, 4, 3, 3, 3, 2]
    assert allocation.allocate_bits(omegas, 3.0, (2, 3, 4)) == [4, 4, 4, 2, 2, 2]
    with pytest.raises(BadInput, match="below the smallest"):
        allocation.allocate_bits_min_cost([{2: 1.0, 3: 0.5}], 1.5)


def test_fixed_mix_and_reverse():
    omegas = [5.0, 9.0, 1.0, 3.0, 7.0, 2.0]
    mix = allocation.fixed_mix(omegas, 2, 3)
    assert mix == [3, 3, 2, 2, 3, 2]
    rev = allocation.reverse([3, 4, 2, 3, 4, 2], omegas)
    assert sorted(rev) == sorted([3, 4, 2, 3, 4, 2])
    assert all(rev[i] <= rev[j] for i in range(6) for j in range(6) if omegas[i] > omegas[j])
    assert rev == [3, 2, 4, 3, 2, 4]


# --- calibration batches ----------------------------------------------------------------------------------


@needs_shared(SHARED_MODELS / "minilm-l6-sst2", GLUE_DIR / "SST-2" / "train.tsv")
def test_calibration_batches_sst2_sample_the_train_split():
    from bert2onnxq.tasks import get_task

    model = SHARED_MODELS / "minilm-l6-sst2"
    a = hessian.calibration_batches(model, "sst2", num_batches=3, batch_size=4, data_dir=GLUE_DIR, seed=0)
    b = hessian.calibration_batches(model, "sst2", num_batches=3, batch_size=4, data_dir=GLUE_DIR, seed=0)
    c = hessian.calibration_batches(model, "sst2", num_batches=3, batch_size=4, data_dir=GLUE_DIR, seed=1)
    assert len(a) == 3 and all(x["input_ids"].shape[0] == 4 and set(x) >= {"labels", "attention_mask"} for x in a)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(x["input_ids"].shape == y["input_ids"].shape and torch.equal(x["input_ids"], y["input_ids"])
                   for x, y in zip(a, c))
    # drawn from the whole split, not its first 12 lines
    head = get_task("sst2").load_examples(data_dir=GLUE_DIR, split="train", limit=12)
    first = hessian.calibration_batches(model, "sst2", num_batches=3, batch_size=4, data_dir=GLUE_DIR, seed=None)
    assert [int(x) for batch in first for x in batch["labels"]] == [e.label for e in head]
    assert sum(int(x["attention_mask"].sum()) for x in a) != sum(int(x["attention_mask"].sum()) for x in first)


@needs_shared(SHARED_MODELS / "minilm-l6-squad", SQUAD_TRAIN)
def test_calibration_batches_squad_positions_hold_the_answer():
    from transformers import AutoTokenizer

    from bert2onnxq.tasks import get_task

    model = SHARED_MODELS / "minilm-l6-squad"
    tok = AutoTokenizer.from_pretrained(str(model))
    task = get_task("squad")
    examples = task.load_examples(data_file=SQUAD_TRAIN, split="train", limit=40)
    enc = task.encode(examples, tok, max_length=384)
    found = 0
    for f, ex in enumerate(enc.example_ids):
        offsets = enc.extra["offsets"][f]
        s, e = hessian._answer_positions(examples[ex], offsets, enc.extra["context_mask"][f])
        if (s, e) == (0, 0):
            continue  # the window misses the answer: [CLS], as HF run_qa labels it
        found += 1
        span = examples[ex].context[offsets[s][0]: offsets[e][1]]
        assert examples[ex].answers[0] in span and len(span) <= len(examples[ex].answers[0]) + 12
    assert found >= 35
    batches = hessian.calibration_batches(model, "squad", tok, num_batches=2, batch_size=4, data_file=SQUAD_TRAIN)
    assert [tuple(b["start_positions"].shape) for b in batches] == [(4,), (4,)]
    assert all((b["end_positions"] >= b["start_positions"]).all() for b in batches)
    with pytest.raises(BadInput, match="question-answering"):
        hessian.calibration_batches(model, "sst2", tok, num_batches=1, data_dir=GLUE_DIR)


@pytest.mark.parametrize("eigenvalues", [
    [9.0, 8.6, 8.2, 3.0, 2.5, 1.0, 0.5, 0.1, 0.0, -0.2, -1.0, -2.0, -3.0, 0.3, 0.7, 1.5],  # close top three
    [-7.0, 6.5, 3.0, 2.0, 1.0, 0.5, 0.1, 0.0, -0.2, -1.0, -2.0, -3.0, 0.3, 0.7, 1.5, 2.0],  # negative on top
], ids=["close", "negative"])
def test_lanczos_same_eigenpair_in_fewer_products(eigenvalues):
    """Same start and stop rule as power iteration: the top eigenvalue (sign kept), in fewer Hessian-vector
    products when the spectrum's top is crowded; warm-started from its own vector it stops at once."""
    loss, params = _quadratic(eigenvalues)
    top = max(eigenvalues, key=abs)
    power = hessian.top_eigenvalue(loss, params, max_iter=500, tol=1e-6, seed=2)
    lz = hessian.top_eigenvalue(loss, params, max_iter=500, tol=1e-6, seed=2, solver="lanczos")
    assert power.converged and lz.converged
    assert lz.value == pytest.approx(top, rel=1e-3) and power.value == pytest.approx(top, rel=1e-2)
    assert lz.iterations < power.iterations / 2
    hv = torch.autograd.grad(torch.autograd.grad(loss(), params, create_graph=True), params, grad_outputs=lz.vector)
    residual = sum(float(((h - top * v) ** 2).sum()) for h, v in zip(hv, lz.vector)) ** 0.5
    assert residual < 0.01 * abs(top)
    again = hessian.top_eigenvalue(loss, params, tol=1e-6, solver="lanczos", init=lz.vector)
    assert again.iterations == 1 and again.value == pytest.approx(top, rel=1e-6)
    p = torch.ones(3, requires_grad=True)
    assert hessian.top_eigenvalue(lambda: (2 * p).sum(), [p], solver="lanczos").value == 0.0


def test_lanczos_first_product_is_power_iterations(tiny_classifier):
    """One product: the Rayleigh quotient of the start vector, the same number power iteration reports."""
    model, batches = tiny_classifier
    a = hessian.layer_sensitivities(model, batches[:1], max_iter=1, seed=4)
    b = hessian.layer_sensitivities(model, batches[:1], max_iter=1, seed=4, solver="lanczos")
    assert [s.eigenvalues[0] for s in b] == pytest.approx([s.eigenvalues[0] for s in a], rel=1e-5)
