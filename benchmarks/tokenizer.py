"""Tokenizer benchmark: collisions, balance, quantisation error and time of every method.

For each data set (default: games, instruments, industrial) and each method (alignment,
rqvae, rqkmeans) x L = 1..5 (K = 256), run ``alignrec tokenize train`` as a child process and
collect the figures of its report.json; plus ablation rows at L = 4 (alignment without
balancing, capacity factor 2, cosine distance; on data with text: without the LLM term and
with the cosine LLM loss). Writes ``benchmarks/results/tokenizer_<dataset>.{json,md}``.

Run from the repository root, under the shared lock (timings are reported)::

    flock /tmp/alignrec-bench.lock .venv/bin/python benchmarks/tokenizer.py

Behaviour embeddings: ``RUN/collab/dccf`` when it exists (the collab stage's DCCF export),
else ``spectral`` (computed by the tokenizer from the training sequences); ``--embeddings``
forces one. The results say which was used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, BenchmarkRun, run_measured  # noqa: E402

PAPER = "paper (seed 001, Table 5, Games, 4 x 256 family): raw collision L=2 10.8%, L=3 0.05%, L=4 0%"


def embeddings_for(run: Path, choice: str) -> str:
    if choice != "auto":
        return choice if choice == "spectral" else str(run / "collab" / choice)
    dccf = run / "collab" / "dccf"
    return str(dccf) if (dccf / "item_embeddings.safetensors").is_file() else "spectral"


def describe(report: dict, label: str, wall: float, rss: float) -> dict:
    collisions = report["collisions"]
    levels = report["levels_final"][: report["levels"]]
    prefixes = report["prefixes_raw"]
    cold = report.get("cold_start") or {}
    text = report.get("text_neighbourhood") or {}
    row = {
        "method": label,
        "L": report["levels"],
        "raw_collision_%": round(100 * collisions["raw"], 4),
        "nearest_code_collision_%": None if collisions.get("nearest_code") is None else round(100 * collisions["nearest_code"], 4),
        "after_sk_%": None if collisions.get("after_method_refinement") is None else round(100 * collisions["after_method_refinement"], 4),
        "final_collision_%": round(100 * collisions["final"], 4),
        "final_levels": report["resolution"]["levels"],
        "moved": report["resolution"]["moved_items"],
        "utilisation": "/".join(f"{row['utilisation']:.3f}" for row in levels),
        "level1_entropy": round(levels[0]["normalised_entropy"], 4),
        "level1_max_items": levels[0]["max_items"],
        "prefix_entropy": round(prefixes[-1]["normalised_entropy"], 4),
        "quant_error": round(report["quantisation_error"][-1], 4),
        "train_s": report["train_seconds"],
        "wall_s": wall,
        "peak_rss_mb": rss,
    }
    if text:
        row["text_nn_prefix1"] = round(text.get("prefix1", 0.0), 4)
        row["text_nn_prefix1_lift"] = round(text.get("prefix1_lift") or 0.0, 2)
    if "level1_match" in cold:
        row["cold_l1_ridge"] = round(cold["ridge_level1_match"], 4)
        row["cold_l2_ridge"] = round(cold.get("ridge_level2_match", 0.0), 4)
        if "projection_level1_match" in cold:
            row["cold_l1_projection"] = round(cold["projection_level1_match"], 4)
            row["cold_l2_projection"] = round(cold.get("projection_level2_match", 0.0), 4)
        row["cold_l1_text_nn"] = round(cold["level1_text_neighbour"], 4)
        row["cold_l1_random"] = round(cold["level1_random"], 4)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["games", "instruments", "industrial"])
    parser.add_argument("--methods", nargs="+", default=["alignment", "rqvae", "rqkmeans"])
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--embeddings", default="auto", help="auto (dccf if present, else spectral), spectral, or a collab model name")
    parser.add_argument("--rqvae-epochs", type=int, default=None, help="override the rqvae epochs (default: the config default)")
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--work", default=str(REPO_ROOT / "runs" / "tokenizer-bench"), help="where the runs' outputs go")
    args = parser.parse_args()

    alignrec = str(REPO_ROOT / ".venv" / "bin" / "alignrec")
    for dataset in args.datasets:
        run_dir = REPO_ROOT / "runs" / dataset
        if not (run_dir / "dataset" / "manifest.json").is_file():
            print(f"skip {dataset}: {run_dir} is not prepared", file=sys.stderr)
            continue
        embeddings = embeddings_for(run_dir, args.embeddings)
        bench = BenchmarkRun(
            f"tokenizer_{dataset}",
            description=(
                f"`alignrec tokenize train` on {dataset} ({args.codebook_size} codes per level), behaviour embeddings: "
                f"{'spectral (computed from the training sequences)' if embeddings == 'spectral' else embeddings}. "
                "Collision rate = 1 - distinct code sequences / items. raw = the model's assignment rule before any "
                "de-duplication; nearest_code = the same codebooks without balancing prices; after_sk = rqvae after "
                "LC-Rec's Sinkhorn re-assignment of colliding items; final = after resolution (always 0). "
                "utilisation per level, level-1 entropy normalised by log2 K, prefix entropy of the full raw codes "
                "normalised by log2 N; quant_error = relative squared error of the raw codes (each method's own space). "
                "train_s = training only (report.json), wall_s = the whole command."
            ),
        )
        runs: list[tuple[str, str, int, list[str]]] = []
        for method in args.methods:
            for levels in args.levels:
                extra = ["--coldstart-holdout", "0.05" if levels == 4 else "0"]
                if method == "rqvae" and args.rqvae_epochs:
                    extra += ["--rqvae-epochs", str(args.rqvae_epochs)]
                runs.append((method, method, levels, extra))
        if not args.no_ablations and "alignment" in args.methods:
            runs += [
                ("alignment balance=none", "alignment", 4, ["--balance", "none"]),
                ("alignment capacity_factor=2", "alignment", 4, ["--capacity-factor", "2"]),
                ("alignment distance=cosine", "alignment", 4, ["--distance", "cosine"]),
            ]
            if dataset == "industrial":
                runs += [
                    ("alignment w/o LA (llm_weight=0)", "alignment", 4, ["--llm-weight", "0"]),
                    ("alignment llm_loss=cosine", "alignment", 4, ["--llm-loss", "cosine"]),
                    ("alignment llm_weight=1", "alignment", 4, ["--llm-weight", "1"]),
                ]
        for label, method, levels, extra in runs:
            out = Path(args.work) / dataset / f"{label.replace(' ', '_').replace('/', '')}-L{levels}"
            command = [
                alignrec, "tokenize", "train", "--data", str(run_dir), "--embeddings", embeddings, "--out", str(out),
                "--method", method, "--levels", str(levels), "--codebook-size", str(args.codebook_size), *extra,
            ]
            print(f"[{dataset}] {label} L={levels} ...", file=sys.stderr, flush=True)
            measured = run_measured(command).check()
            report = json.loads((out / "report.json").read_text())
            row = describe(report, label, measured.wall_s, measured.peak_rss_mb)
            print(f"    raw {row['raw_collision_%']}%  train {row['train_s']} s", file=sys.stderr, flush=True)
            bench.add_row(row)
        first = json.loads((Path(args.work) / dataset / f"{args.methods[0]}-L{args.levels[0]}" / "report.json").read_text())
        bench.extra["embeddings"] = embeddings
        bench.extra["text"] = first["text"]["summary"]
        columns: list[str] = []
        for row in bench.rows:  # every column any row has (cold-start ones only on L = 4 rows)
            columns += [key for key in row if key not in columns]
        bench.finish(
            columns=columns,
            notes=[
                PAPER,
                f"text: {first['text']['summary']}",
                "L = 1: 256 codes cannot name more items than that; the resolver appends an extra level (final_levels = 2).",
                "Cold-start columns (L = 4 rows): 5% of the items with text held out (their text kept out of the LLM loss "
                "and the ridge fit), coded from text only — ridge = text->behaviour ridge map then the assignment rule, "
                "projection = the LLM-alignment projection P (alignment only) — compared with the codes the full model "
                "gives them from behaviour (l1 = level-1 code, l2 = first two codes); "
                "text_nn = the codes of the nearest warm item in LLM space; random = a prefix drawn from the warm distribution.",
            ]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
