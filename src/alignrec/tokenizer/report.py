"""``report.json`` -> ``report.md`` and ``report.png`` for a tokenizer run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignrec.utils.io import atomic_path, atomic_write_json, atomic_write_text


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.3f}%" if percent else f"{value:.4f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Tokenizer report: {report['method']} ({report['levels']} x {report['codebook_size']})",
        "",
        f"- data: `{report['data']}` — {report['items']} items; behaviour embeddings: {report['embeddings'].get('kind')}"
        f" ({report['embeddings'].get('source')})",
        f"- text: {report['text']['summary']}",
        f"- training time: {report['train_seconds']:.2f} s (whole command {report['total_seconds']:.2f} s)",
        f"- duplicate input rows (a floor for any raw collision rate): {report['duplicate_input_rows']}",
        "",
        "## Collisions",
        "",
        "| | rate |",
        "|---|---|",
        f"| raw (assignment rule, before any de-duplication) | {_fmt(report['collisions']['raw'], True)} |",
    ]
    if report["collisions"].get("nearest_code") is not None:
        lines.append(f"| nearest code without balancing prices (same codebooks) | {_fmt(report['collisions']['nearest_code'], True)} |")
    if report["collisions"].get("after_method_refinement") is not None:
        lines.append(f"| after the method's own fix (rqvae: Sinkhorn on colliding items) | {_fmt(report['collisions']['after_method_refinement'], True)} |")
    lines += [
        f"| final ({report['resolution']['strategy']}, {report['resolution']['moved_items']} items moved) | {_fmt(report['collisions']['final'], True)} |",
        "",
        "## Prefixes (raw codes)",
        "",
        "| length | distinct | entropy (bits) | normalised entropy | collision rate | largest group |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["prefixes_raw"]:
        lines.append(
            f"| {row['length']} | {row['distinct']} | {row['entropy_bits']:.3f} | {row['normalised_entropy']:.4f} | "
            f"{100 * row['collision_rate']:.3f}% | {row['largest_group']} |"
        )
    lines += [
        "",
        "## Levels (final codes)",
        "",
        "| level | used / K | utilisation | entropy (bits) | normalised entropy | items per code (min / max) | CV | quantisation error (relative, cumulative, raw codes) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    errors = report["quantisation_error"]
    for row in report["levels_final"]:
        error = errors[row["level"] - 1] if row["level"] - 1 < len(errors) else None
        lines.append(
            f"| {row['level']} | {row['used']} / {row['codes']} | {row['utilisation']:.4f} | {row['entropy_bits']:.3f} | "
            f"{row['normalised_entropy']:.4f} | {row['min_items']} / {row['max_items']} | {row['cv_items']:.3f} | {_fmt(error)} |"
        )
    for title, key in (("Text neighbourhoods (LLM space)", "text_neighbourhood"), ("Behaviour neighbourhoods", "behaviour_neighbourhood")):
        block = report.get(key) or {}
        if block:
            lines += ["", f"## {title}", "", f"Share of each item's {block['neighbours']} nearest neighbours with the same code prefix ({block['queries']} queries).", "", "| prefix | agreement | chance | lift |", "|---|---|---|---|"]
            for depth in (1, 2):
                if f"prefix{depth}" in block:
                    lines.append(
                        f"| {depth} | {block[f'prefix{depth}']:.4f} | {block[f'prefix{depth}_chance']:.4f} | {_fmt(block[f'prefix{depth}_lift'])} |"
                    )
    cold = report.get("cold_start") or {}
    lines += ["", "## Cold start (text only)", ""]
    if "level1_match" in cold:
        lines += [
            f"{cold['held_out_items']} held-out items coded from text (ridge alpha {cold['ridge_alpha']:.3g}, leave-one-out relative error {cold['ridge_loo_relative_error']:.3f}); {cold['protocol']}.",
            "",
            f"New items take the `{cold.get('chosen_path')}` path.",
            "",
            "| prefix | ridge text -> behaviour -> codes | projection P (LLM alignment) | nearest text neighbour's codes | random (warm distribution) | most popular |",
            "|---|---|---|---|---|---|",
        ]
        for depth in (1, 2):
            if f"level{depth}_match" in cold:
                lines.append(
                    f"| {depth} | {_fmt(cold.get(f'ridge_level{depth}_match'))} | {_fmt(cold.get(f'projection_level{depth}_match'))} | "
                    f"{cold[f'level{depth}_text_neighbour']:.4f} | {cold[f'level{depth}_random']:.4f} | {cold[f'level{depth}_popular']:.4f} |"
                )
    else:
        lines.append(cold.get("skipped", "not evaluated"))
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def render_png(report: dict[str, Any], level_counts: list[list[int]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    ax = axes[0][0]
    ax.hist(level_counts[0], bins=40, color="#4477aa")
    ax.set_title("items per level-1 code (final)")
    ax.set_xlabel("items")
    ax.set_ylabel("codes")
    ax = axes[0][1]
    levels = [row["level"] for row in report["levels_final"]]
    ax.bar([x - 0.2 for x in levels], [row["normalised_entropy"] for row in report["levels_final"]], width=0.4, label="normalised entropy")
    ax.bar([x + 0.2 for x in levels], [row["utilisation"] for row in report["levels_final"]], width=0.4, label="utilisation")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("level")
    ax.set_title("balance per level")
    ax.legend(loc="lower left")
    ax = axes[1][0]
    lengths = [row["length"] for row in report["prefixes_raw"]]
    ax.plot(lengths, [100 * row["collision_rate"] for row in report["prefixes_raw"]], marker="o")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("prefix length")
    ax.set_ylabel("raw collision rate (%)")
    ax.set_title("raw prefix collisions")
    ax = axes[1][1]
    history = report.get("history") or []
    keys = [k for k in ("behaviour_loss", "llm_loss", "reconstruction_loss", "quantisation_loss") if history and k in history[0]]
    for key in keys:
        values = [h[key] for h in history]
        if any(v != 0 for v in values):
            ax.plot(range(1, len(values) + 1), values, label=key)
    ax.set_xlabel("round" if history and "round" in history[0] else "epoch")
    ax.set_title("training losses")
    if keys:
        ax.legend()
    figure.suptitle(f"{report['method']} {report['levels']}x{report['codebook_size']} on {Path(report['data']).name}")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=90)
    plt.close(figure)


def write_report(directory: Path, report: dict[str, Any], level_counts: list[list[int]]) -> None:
    atomic_write_json(directory / "report.json", report)
    atomic_write_text(directory / "report.md", render_markdown(report))
    render_png(report, level_counts, directory / "report.png")
