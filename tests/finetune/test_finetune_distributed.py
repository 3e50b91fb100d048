"""The multi-process path: two CPU processes (gloo) under torchrun train a few steps and agree."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from finetune_helpers import write_cyclic_run

HERE = Path(__file__).resolve().parent

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    sys.path.insert(0, {here!r})
    from finetune_helpers import tiny_backbone
    from alignrec.finetune.config import FinetuneConfig
    from alignrec.finetune.recipe import FinetuneJob

    def digest(model):
        h = hashlib.sha256()
        for name, p in sorted(model.named_parameters()):
            if p.requires_grad:
                h.update(name.encode()); h.update(p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    run, out = sys.argv[1], sys.argv[2]
    config = FinetuneConfig(max_steps=3, batch_size=4, learning_rate=1e-2, logging_steps=1, save_steps=100,
                            lora_dropout=0.0, warmup_ratio=0.0, save_adapter=False)
    job = FinetuneJob(config, run, out, backbone=tiny_backbone())
    job.prepare()
    before = digest(job.prepared.model)
    job.train()
    rank = int(os.environ["RANK"])
    losses = [e["loss"] for e in job.trainer.state.log_history if "loss" in e]
    with open(os.path.join(out, f"rank{{rank}}.json"), "w") as handle:
        json.dump({{"before": before, "after": digest(job.trainer.model), "losses": losses,
                   "world_size": job.metrics["world_size"], "examples": len(job.train_data)}}, handle)
    job.save()
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.distributed
def test_two_cpu_processes_train_in_step(tmp_path: Path) -> None:
    run = write_cyclic_run(tmp_path / "run", users=16)
    out = tmp_path / "ft"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ALIGNREC_PROGRESS": "0"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), str(script), str(run), str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["before"] == ranks[1]["before"]  # same start on both ranks
    assert ranks[0]["after"] == ranks[1]["after"]  # gradients were all-reduced: identical weights
    assert ranks[0]["after"] != ranks[0]["before"]  # and they did train
    assert ranks[0]["losses"] == ranks[1]["losses"] and len(ranks[0]["losses"]) == 3
    assert (out / "model" / "config.json").is_file()  # rank 0 wrote the merged model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
