"""Fast (batched, KV-cached, tensor trie) vs. reference (HF generate + prefix_allowed_tokens_fn)
constrained beam search: users per second on the same model, users, beams and batch size.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/beam_search.py

Users are test users of a prepared data set (default ``runs/games``: real history lengths);
the item codes are random unique codes (L levels x K codes) for its items, added to the
model's vocabulary as new tokens (the model is not fine-tuned: speed does not depend on it,
and an untrained model makes the agreement check harder, since scores are close together).
For every batch the two methods run back to back, so both see the same machine load; the
ratio is taken over wall time and over this process's CPU time. The top-K lists of the two
methods are compared too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchmarkRun  # noqa: E402


def build_recommender(model_name: str, dataset, levels: int, codes_per_level: int, seed: int):
    import torch

    from alignrec.llm.recommender import GenerativeRecommender
    from alignrec.llm.tiny_run import random_unique_codes
    from alignrec.llm.vocab import add_code_tokens
    from alignrec.tokenizer.codes import ItemCodes

    sizes = [codes_per_level] * levels
    codes = ItemCodes(random_unique_codes(dataset.num_items, sizes, seed), sizes, list(dataset.item_ids))
    if model_name == "smollm2":
        from alignrec.llm.backbone import load_backbone

        model, tokenizer, _ = load_backbone("smollm2")
        token_ids = add_code_tokens(tokenizer, model, codes.vocabulary())
        # Give the new code tokens distinct random embeddings (std of the existing rows), as a
        # fine-tuned model has: resize's mean initialisation makes all code tokens nearly equal,
        # so every item would score the same and rankings would be decided by rounding.
        with torch.no_grad():
            embeddings = model.get_input_embeddings().weight
            generator = torch.Generator().manual_seed(seed)
            std = float(embeddings[: min(token_ids)].std())
            embeddings[token_ids] = torch.randn(len(token_ids), embeddings.shape[1], generator=generator) * std
            output = model.get_output_embeddings().weight
            if output.data_ptr() != embeddings.data_ptr():
                output[token_ids] = torch.randn(len(token_ids), output.shape[1], generator=generator) * float(output[: min(token_ids)].std())
    elif model_name == "tiny":
        from alignrec.llm.tiny import build_tiny_backbone

        model, tokenizer = build_tiny_backbone(code_tokens=codes.vocabulary(), seed=seed, hidden_size=64, layers=2, heads=2)
        with torch.no_grad():
            model.lm_head.weight.mul_(30.0)
    else:
        raise SystemExit(f"unknown model {model_name!r}")
    return GenerativeRecommender(model, tokenizer, codes, version=model_name)


def measure(recommender, histories, batch_size: int, beam: int, top_k: int) -> dict:
    """Time the three searches on the same batches (users sorted by prompt length, as
    ``GenerativeRecommender.recommend`` does), one after the other per batch."""
    import numpy as np
    import torch

    from alignrec.llm.beam_search import constrained_beam_search
    from alignrec.llm.reference import reference_beam_search

    r = recommender
    searches = {
        "fast": lambda p: constrained_beam_search(r.model, p, r.trie, r.vocabulary, beam, top_k, r.pad_token_id),
        "fast_plain_cache": lambda p: constrained_beam_search(
            r.model, p, r.trie, r.vocabulary, beam, top_k, r.pad_token_id, share_prompt_cache=False
        ),
        "reference": lambda p: reference_beam_search(
            r.model, p, r.codes.codes, r.vocabulary, beam, top_k, r.pad_token_id, r.tokenizer.eos_token_id
        ),
    }
    prompts = sorted((r.prompt_ids(h) for h in histories), key=len, reverse=True)
    wall = dict.fromkeys(searches, 0.0)
    cpu = dict.fromkeys(searches, 0.0)
    outputs: dict[str, list] = {name: [] for name in searches}
    for search in searches.values():  # warm-up (allocations, kernel choice), not timed
        search(prompts[:1])
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        for name, search in searches.items():
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            outputs[name].append(search(batch))
            wall[name] += time.perf_counter() - wall_start
            cpu[name] += time.process_time() - cpu_start
        done = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in wall.items())
        print(f"  {start + len(batch)}/{len(prompts)} users: {done}", file=sys.stderr)
    items = {name: torch.cat([o.items for o in outs]) for name, outs in outputs.items()}
    scores = {name: torch.cat([o.scores for o in outs]) for name, outs in outputs.items()}
    users = len(prompts)
    same = (items["fast"] == items["reference"]).all(dim=1)
    same_plain = (items["fast"] == items["fast_plain_cache"]).all(dim=1)
    return {
        "users": users,
        "mean_prompt_tokens": round(float(np.mean([len(p) for p in prompts])), 1),
        "fast_users_per_s": round(users / wall["fast"], 3),
        "fast_plain_cache_users_per_s": round(users / wall["fast_plain_cache"], 3),
        "reference_users_per_s": round(users / wall["reference"], 3),
        "speedup_wall": round(wall["reference"] / wall["fast"], 2),
        "speedup_cpu": round(cpu["reference"] / cpu["fast"], 2),
        "shared_vs_plain_cache": round(wall["fast_plain_cache"] / wall["fast"], 2),
        "identical_top_k_lists": f"{int(same.sum())}/{users}",
        "identical_plain_cache": f"{int(same_plain.sum())}/{users}",
        "max_abs_score_diff": round(float((scores["fast"] - scores["reference"]).abs().max()), 6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/games", help="prepared data set whose test users are used")
    parser.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    parser.add_argument("--users", type=int, nargs="+", default=[64, 8], help="users per model (same order as --models)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[16, 4], help="batch size per model")
    parser.add_argument("--beam-size", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--codes-per-level", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch

    from alignrec.data.dataset import load_dataset

    torch.set_num_threads(args.threads)
    run = BenchmarkRun(
        "beam_search",
        description=(
            "Constrained beam search: fast (batched users, one prompt KV cache per user shared by its beams, tensor trie), "
            "the same with a plain per-beam HF cache, and the reference (HF generate with prefix_allowed_tokens_fn): "
            "users/s on the same model, users, beams and batches; CPU only."
        ),
    )
    dataset = load_dataset(args.data)
    test = dataset.split("test")
    rng = np.random.default_rng(args.seed)
    for model_name, users, batch_size in zip(args.models, args.users, args.batch_size, strict=True):
        rows = rng.choice(len(test), size=users, replace=False)
        histories = [test.history(int(r)).tolist() for r in rows]
        print(f"{model_name}: {users} users, batch {batch_size}", file=sys.stderr)
        recommender = build_recommender(model_name, dataset, args.levels, args.codes_per_level, args.seed)
        parameters = sum(p.numel() for p in recommender.model.parameters())
        result = measure(recommender, histories, batch_size, args.beam_size, args.top_k)
        run.add_row(
            {
                "model": model_name,
                "parameters_m": round(parameters / 1e6, 1),
                "items": dataset.num_items,
                "codes": f"{args.levels}x{args.codes_per_level}",
                "beam": args.beam_size,
                "top_k": args.top_k,
                "batch": batch_size,
                **result,
            }
        )
        del recommender
    run.extra["data"] = args.data
    run.extra["torch_threads"] = args.threads
    json_path, md_path = run.finish(
        notes=[
            f"test users of {args.data} (seeded sample), random unique item codes; models not fine-tuned: tiny = random "
            "Llama, smollm2 = SmolLM2-135M-Instruct weights with random code-token rows (std of the existing rows)",
            "speedup = reference time / fast time over the same batches, run back to back (wall: elapsed; cpu: this process)",
            "shared_vs_plain_cache = fast search with a per-beam HF cache / with the shared prompt cache",
            "no GPU in this session: CPU figures only (the GPU run of SmolLM2-135M on all Games test users is not measured)",
        ]
    )
    print(md_path.read_text())


if __name__ == "__main__":
    main()
