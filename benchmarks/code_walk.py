"""How many source files a reader walks through on the LLM path: measured, not guessed.

Runs the handlers of ``alignrec finetune`` and ``alignrec evaluate`` on a tiny synthetic run (a random tiny
Llama, random item codes) under ``sys.setprofile`` and lists every alignrec source file whose
code ran between the command line and (finetune) the loss, (evaluate) the ranked item ids:
the files a newcomer reading the path top to bottom opens. The run's set-up (data, codes,
tasks, backbone) is not counted. Works on this tree and on older ones (``PYTHONPATH=OLD/src``).

    git worktree add /tmp/before 54541ad
    python benchmarks/code_walk.py --before /tmp/before/src   # writes benchmarks/results/code_walk.{json,md}
    python benchmarks/code_walk.py --print                    # this tree only, JSON on stdout
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path

import alignrec
from alignrec.cli import build_parser, main

PACKAGE = Path(alignrec.__file__).resolve().parent


@contextlib.contextmanager
def visited(files: set[str]):
    def hook(frame, event, arg):  # noqa: ANN001 - the profiler's signature
        if event == "call":
            name = frame.f_code.co_filename
            if name.startswith(str(PACKAGE)):
                files.add(str(Path(name).relative_to(PACKAGE)))

    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(None)


def walk(argv: list[str]) -> set[str]:
    """The files a command's handler runs (the parser of every command is built before: not counted)."""
    from alignrec.utils.log import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging("WARNING")
    files: set[str] = set()
    with visited(files):
        args.handler(args)
    return files


def summary(files: set[str]) -> dict:
    packages = sorted({f.split("/")[0] if "/" in f else "alignrec" for f in files})
    return {"files": len(files), "packages": len(packages), "package_names": packages, "file_names": sorted(files)}


def tiny_run(root: Path) -> tuple[Path, Path]:
    import numpy as np

    from alignrec.data import load_dataset
    from alignrec.data.synthetic import write_synthetic
    from alignrec.llm.tiny import build_tiny_backbone
    from alignrec.tokenizer.codes import ItemCodes

    run = root / "run"
    write_synthetic(run, num_users=24, num_items=16, groups=4, length=6, kind="cyclic")
    dataset = load_dataset(run)
    items = np.arange(dataset.num_items)
    codes = ItemCodes(np.stack([items // 4, items % 4], axis=1), [4, 4], list(dataset.item_ids))
    codes.save(run / "tokenizer")
    model, tokenizer = build_tiny_backbone(code_tokens=codes.vocabulary())
    backbone = root / "backbone"
    model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    tasks = ["tasks", "build", "--data", str(run), "--tasks", "sequential"]
    try:
        main([*tasks, "--llm", "none"])  # older trees measured example lengths with a tokenizer
    except SystemExit:
        main(tasks)
    return run, backbone


def main_walk() -> dict:
    # the commands print their own summaries: keep stdout for this script's JSON
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):
        run, backbone = tiny_run(Path(folder))
        training = walk(["finetune", "--data", str(run), "--llm", str(backbone), "--max-steps", "2", "--batch-size", "4",
                         "--save-steps", "100", "--no-save-adapter"])
        inference = walk(["evaluate", "--model", str(run), "--beam-size", "10", "--users", "8"])
    return {"alignrec": str(PACKAGE), "finetune (CLI to loss and saved model)": summary(training),
            "evaluate (CLI to ranked ids)": summary(inference)}


def walk_of(src: Path | None) -> dict:
    """``main_walk`` of this tree (None) or of another checkout's ``src`` folder, in a fresh process."""
    import os
    import subprocess

    if src is None:
        return main_walk()
    env = {**os.environ, "PYTHONPATH": str(src), "ALIGNREC_PROGRESS": "0"}
    output = subprocess.run([sys.executable, __file__, "--print"], env=env, cwd=src.parent, check=True,
                            capture_output=True, text=True).stdout
    return json.loads(output)


def main_cli(argv: list[str] | None = None) -> None:
    import argparse

    from common import BenchmarkRun, git_commit

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="src/ of an older checkout to compare with")
    parser.add_argument("--print", action="store_true", help="print this tree's walk as JSON (nothing written)")
    args = parser.parse_args(argv)
    if args.print:
        print(json.dumps(main_walk(), indent=2))
        return
    run = BenchmarkRun("code_walk", description=(
        "Source files and packages of alignrec whose code runs in the handler of a command on a tiny run "
        "(sys.setprofile; the parser of every command, built before, is not counted): what a reader of the "
        "LLM path opens, from the command to the loss (finetune) and to the ranked item ids (evaluate)."))
    trees = [("this tree", None)] if args.before is None else [("before", args.before.resolve()), ("this tree", None)]
    files: dict[str, dict[str, list[str]]] = {}
    for label, src in trees:
        walks = walk_of(src)
        commit = git_commit(src.parent) if src is not None else git_commit(Path(__file__).resolve().parents[1])
        for walk_name, found in walks.items():
            if not isinstance(found, dict):
                continue
            run.add_row({"tree": f"{label} ({commit[:7]})", "walk": walk_name, "files": found["files"],
                         "packages": found["packages"], "package names": ", ".join(found["package_names"])})
            files.setdefault(f"{label} ({commit[:7]})", {})[walk_name] = found["file_names"]
    run.extra["file_names"] = files
    run.finish(["tree", "walk", "files", "packages", "package names"])


if __name__ == "__main__":
    main_cli()
