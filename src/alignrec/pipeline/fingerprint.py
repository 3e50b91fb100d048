"""What code produced a stage's outputs: the source files of its modules and their imports.

A stage's key (:func:`alignrec.pipeline.stages.stage_key`) covers its settings and the stages it
reads; this module adds the code. :func:`code_files` follows the package's import graph
*statically* (``ast``, nothing is imported) from a stage's entry modules and returns every
``alignrec`` source file they can reach: ``import``/``from ... import`` statements anywhere in a
file (the package imports lazily inside functions), the ``__init__.py`` of every package on the
way (Python runs them on import), and the registries' dynamic imports
(``importlib.import_module(f"alignrec.collab.models.{name}")`` reaches every module of that
package). :func:`code_fingerprint` hashes those files' bytes, so a bug fix in a stage, or in
anything it uses, re-runs the stage and everything downstream, while docs, tests, configs and
unrelated modules leave it alone.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "alignrec"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/alignrec


def _module_file(root: Path, module: str) -> Path | None:
    """The source file of a dotted module name under ``root`` (the package folder), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    relative = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_modules(root: Path, package: str) -> list[str]:
    """Every module inside a package folder (for a dynamic import of ``package.<name>``)."""
    init = _module_file(root, package)
    if init is None or init.name != "__init__.py":
        return []
    return sorted(_module_name(root, path) for path in init.parent.rglob("*.py"))


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[str]:
    """Dotted names a module imports: statements (absolute and relative) and ``import_module`` calls."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            yield base
            # ``from alignrec.x import y`` may name a submodule y
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_import_module(node.func) and node.args:
            target = node.args[0]
            if isinstance(target, ast.Constant) and isinstance(target.value, str):
                yield target.value
            elif isinstance(target, ast.JoinedStr) and target.values and isinstance(target.values[0], ast.Constant):
                prefix = str(target.values[0].value)
                if prefix.endswith("."):
                    yield prefix + "*"  # f"alignrec.pkg.{name}": any module of the package


def _is_import_module(func: ast.expr) -> bool:
    """``importlib.import_module`` or a bare ``import_module`` (the registries' dynamic imports)."""
    return (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id == "import_module")


_PARSED: dict[tuple[str, bool, str], tuple[str, ...]] = {}  # (module, is package, sha256 of source) -> imports


def _read(path: Path, module: str) -> tuple[str, tuple[str, ...]]:
    """(sha256 of the file, the dotted names it imports); parsing is cached by content."""
    source = path.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    key = (module, path.name == "__init__.py", digest)
    if key not in _PARSED:
        tree = ast.parse(source, filename=str(path))
        _PARSED[key] = tuple(sorted(set(_imported_names(tree, module, key[1]))))
    return digest, _PARSED[key]


def _closure(modules: Iterable[str], root: Path) -> dict[Path, str]:
    """{source file: sha256} of ``modules`` and of every package module they import, transitively."""
    pending = list(modules)
    missing = [name for name in pending if _module_file(root, name) is None]
    if missing:
        raise ValueError(f"{missing}: no such module under {root}")
    seen: dict[Path, str] = {}
    while pending:
        name = pending.pop()
        if name.endswith(".*"):
            pending += _package_modules(root, name[:-2])
            continue
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        for depth in range(1, len(parts) + 1):
            prefix = ".".join(parts[:depth])
            path = _module_file(root, prefix)
            if path is None or path in seen:
                continue
            seen[path], imports = _read(path, prefix)
            pending += imports
    return seen


def code_files(modules: Iterable[str], root: Path | None = None) -> list[Path]:
    """Source files of ``modules`` and of every package module they import, transitively (sorted)."""
    return sorted(_closure(modules, Path(root) if root is not None else PACKAGE_ROOT))


def code_fingerprint(modules: Iterable[str], root: Path | None = None) -> dict[str, str]:
    """``{relative path: sha256 of its bytes}`` of :func:`code_files`, plus ``"*"``: the digest of all."""
    root = Path(root) if root is not None else PACKAGE_ROOT
    files = {str(path.relative_to(root)): digest for path, digest in _closure(modules, root).items()}
    total = hashlib.sha256("".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items())).encode())
    return {"*": total.hexdigest(), **files}


def changed_files(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Files added, removed or edited between two fingerprints (for the log)."""
    return sorted(name for name in set(before) | set(after) if name != "*" and before.get(name) != after.get(name))
