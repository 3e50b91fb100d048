"""Helpers for the tests of the scripts under benchmarks/: import one, and run the tiny pipeline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as a module (with benchmarks/ on the path for its ``common`` import)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_tiny_pipeline(out: Path, *overrides: str) -> Path:
    """``alignrec run configs/tiny.yaml --set out=OUT --set threads=1 ... --until evaluate`` (about 15 s)."""
    from alignrec.cli import main

    sets = [arg for override in (f"out={out}", "threads=1", *overrides) for arg in ("--set", override)]
    assert main(["run", str(TINY), *sets, "--until", "evaluate"]) == 0
    return out
