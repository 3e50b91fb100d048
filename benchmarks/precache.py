"""Pre-cache throughput: full vs. incremental runs, and cache-store writes, SQLite vs. Redis.

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/precache.py

1. Store writes: ``put_many`` of one 20-item entry per Games user (50,546) in calls of 5,000
   entries (timing includes building the entries in Python), SQLite vs. Redis.
2. ``precache()`` end to end on Games users (model + prompts + beam search + store), with a
   small random Llama (the model cost is the beam-search benchmark's subject; here the model is
   small so the pipeline and the store show): a full run over N users, the same run again
   (nothing changed: fingerprint check only), then a run after 1% of the users got a new item.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, BenchmarkRun  # noqa: E402

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from serve_latency import fill, free_port  # noqa: E402


def build_run(folder: Path, data: Path, seed: int, hidden: int, layers: int) -> Path:
    """A run folder over an existing data set: random unique codes + a random Llama."""
    import torch

    from alignrec.data.dataset import load_dataset
    from alignrec.llm.tiny_run import random_unique_codes
    from alignrec.llm.tiny import build_tiny_backbone
    from alignrec.tokenizer.codes import ItemCodes

    run = folder / "run"
    run.mkdir(parents=True)
    (run / "dataset").symlink_to((data / "dataset").resolve())
    dataset = load_dataset(run)
    sizes = [256] * 4
    codes = ItemCodes(random_unique_codes(dataset.num_items, sizes, seed), sizes, list(dataset.item_ids))
    codes.save(run / "finetune")
    model, tokenizer = build_tiny_backbone(code_tokens=codes.vocabulary(), seed=seed, hidden_size=hidden, layers=layers, heads=4)
    with torch.no_grad():
        model.lm_head.weight.mul_(30.0)
    model.save_pretrained(run / "finetune" / "model")
    tokenizer.save_pretrained(run / "finetune" / "model")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="runs/games")
    parser.add_argument("--users", type=int, default=2000, help="users of the end-to-end runs (--max-users)")
    parser.add_argument("--store-users", type=int, default=50546)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from alignrec.data.dataset import load_dataset
    from alignrec.serve.precache import PrecacheConfig, precache
    from alignrec.serve.store import open_store

    torch.set_num_threads(args.threads)
    run_record = BenchmarkRun(
        "precache",
        description="Pre-cache: store write throughput and end-to-end full / unchanged / incremental runs, SQLite vs Redis.",
    )
    folder = Path(tempfile.mkdtemp(prefix="alignrec-precache-bench-"))
    redis_process = None
    try:
        urls = {"sqlite": lambda name: f"sqlite:///{folder / (name + '.sqlite')}"}
        if shutil.which("redis-server"):
            port = free_port()
            (folder / "redis").mkdir()
            redis_process = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder / "redis"), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            urls["redis"] = lambda name: f"redis://127.0.0.1:{port}/0?namespace={name}"

        # 1. raw store writes
        for store, url in urls.items():
            seconds = fill(url("fill"), args.store_users, 20)
            run_record.add_row({"store": store, "what": f"build + put_many, {args.store_users} entries x 20 items (5,000 per call)", "users": args.store_users, "seconds": round(seconds, 2), "users_per_s": round(args.store_users / seconds, 1)})
            print(run_record.rows[-1], file=sys.stderr)

        # 2. end to end
        run = build_run(folder, REPO_ROOT / args.data, 0, args.hidden, args.layers)
        dataset = load_dataset(run)
        changed = folder / "changed.jsonl"
        with open(changed, "w") as handle:
            for user in range(0, args.users, 100):  # 1% of the cached users get one more item
                sequence = [dataset.item_ids[i] for i in dataset.sequences[user]] + [dataset.item_ids[user % dataset.num_items]]
                handle.write(json.dumps({"user_id": dataset.user_ids[user], "items": sequence}) + "\n")
        for store, url in urls.items():
            config = PrecacheConfig(top_k=20, beam_size=20, batch_size=args.batch_size, max_users=args.users, device="cpu", dtype="float32")
            target = url("e2e")
            for label, histories in (("full run", None), ("rerun, nothing changed", None), ("rerun, 1% of users changed", changed)):
                started = time.perf_counter()
                report = precache(config, run, target, histories=histories)
                seconds = time.perf_counter() - started
                run_record.add_row(
                    {
                        "store": store,
                        "what": f"precache() {label}",
                        "users": report["users"],
                        "computed": report["computed"],
                        "seconds": round(seconds, 2),
                        "users_per_s": round(report["users"] / seconds, 1),
                        "search_s": report["search_s"],
                    }
                )
                print(run_record.rows[-1], file=sys.stderr)
            with open_store(target) as cache:
                assert cache.count() == args.users + len(changed.read_text().splitlines()) * 0
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    run_record.extra.update({"data": args.data, "model": f"random Llama, hidden {args.hidden}, {args.layers} layers", "torch_threads": args.threads})
    _, md_path = run_record.finish(
        columns=["store", "what", "users", "computed", "seconds", "users_per_s", "search_s"],
        notes=[
            "end-to-end seconds include loading the model and data set, prompt building, beam search (beam 20, top 20) and store writes",
            "users_per_s of the reruns counts users checked (fingerprint + run key), not computed",
            "the beam-search cost of a real model is in beam_search.md",
        ],
    )
    print(md_path.read_text())


if __name__ == "__main__":
    main()
