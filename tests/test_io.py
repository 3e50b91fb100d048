"""Atomic writes: a failure leaves the previous state; JSON reading errors name file and line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from alignrec.errors import InputError
from alignrec.utils.io import (
    atomic_directory,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    hash_inputs,
    read_json,
    read_safetensors,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_directory_crash_leaves_the_old_folder_intact(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("new")
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert (target / "a.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_directory_replaces_when_complete_and_refuses_without_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "stage"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert leftovers(tmp_path) == []
    with pytest.raises(InputError, match="already exists"), atomic_directory(target, overwrite=False):
        pass


def test_atomic_directory_crash_on_first_build_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_directory(tmp_path / "stage") as tmp:
        (tmp / "a.txt").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"


def test_atomic_writes_use_normal_file_modes(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
        assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
        path.chmod(0o640)
        atomic_write_text(path, "y")  # an existing file keeps its mode
        assert path.stat().st_mode & 0o777 == 0o640
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("z")
        assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0o700
    finally:
        os.umask(old)


def test_json_round_trip_with_numpy_and_paths(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "x.json", {"n": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("q")})
    assert read_json(path) == {"n": 3, "f": 0.5, "a": [0, 1, 2], "p": "q"}


def test_read_json_errors_name_file_and_position(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  "b": \n}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_json(bad)
    assert str(caught.value) == f"{bad}: line 4, column 1: invalid JSON (Expecting value)"
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(InputError, match=r"bad\.json: line 1, byte 8: not UTF-8 text \(invalid start byte: 0xff\)"):
        read_json(bad)


def test_hash_inputs(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello")
    described = hash_inputs({"file": tmp_path / "f.txt", "gone": tmp_path / "nope"})
    assert described["file"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert described["file"]["bytes"] == 5
    assert described["gone"]["missing"] is True


def test_iter_jsonl_numbers_lines_and_names_bad_ones(tmp_path):
    from alignrec.utils.io import iter_jsonl

    good = tmp_path / "good.jsonl"
    good.write_text('{"a": 1}\n\n  \n[2, 3]\n"x"\n', encoding="utf-8")
    assert list(iter_jsonl(good)) == [(1, {"a": 1}), (4, [2, 3]), (5, "x")]

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": }\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        list(iter_jsonl(bad))
    assert str(caught.value) == f"{bad}: line 2, column 7: invalid JSON (Expecting value)"

    with pytest.raises(InputError, match=r"missing\.jsonl: run the build first$"):
        list(iter_jsonl(tmp_path / "missing.jsonl", missing="run the build first"))

    latin = tmp_path / "latin.jsonl"
    latin.write_bytes('{"t": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8 text"):
        list(iter_jsonl(latin))


# ----------------------------------------------------------------------------- stale temporaries


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def owned_temporary(folder: Path, target: str, pid: int, start: int | None = None, host: str | None = None,
                    kind: str = "tmp") -> Path:
    """A temporary named as atomic_directory names its own, for process ``pid``."""
    from alignrec.utils import io

    if start is None:
        start = io._process_start(pid) or 0
    leftover = folder / f".{target}.{pid}-{start}-{host or io._HOST}.k3j4h5g6.{kind}"
    leftover.mkdir()
    (leftover / "half-written.parquet").write_bytes(b"PAR1")
    return leftover


def test_a_temporary_of_a_dead_process_is_removed_by_the_next_write(tmp_path: Path) -> None:
    # killed runs used to leave .dataset.*.tmp folders that no rerun ever removed
    stale = owned_temporary(tmp_path, "dataset", dead_pid())
    with atomic_directory(tmp_path / "dataset") as tmp:
        assert not stale.exists()  # removed when the stage starts, before it writes
        (tmp / "a.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_temporaries_of_live_owners_and_other_targets_are_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import subprocess
    import sys

    from alignrec.utils.io import remove_stale_temporaries

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = owned_temporary(tmp_path, "dataset", sleeper.pid)  # another run writing the same target now
        mine = owned_temporary(tmp_path, "dataset", os.getpid())  # this process (another thread)
        remote = owned_temporary(tmp_path, "dataset", dead_pid(), host="other-machine")  # cannot be checked
        other_target = owned_temporary(tmp_path, "tokenizer", dead_pid())
        reused = owned_temporary(tmp_path, "dataset", sleeper.pid, start=1)  # the pid now belongs to another process
        legacy = tmp_path / ".dataset.abcd1234.tmp"  # made before owners were recorded
        legacy.mkdir()
        with caplog.at_level("WARNING"):
            removed = remove_stale_temporaries(tmp_path / "dataset")
        assert removed == [reused]
        assert all(p.exists() for p in (live, mine, remote, other_target, legacy))
        assert "left by an older alignrec run" in caplog.text
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(tmp_path / "dataset") == [live]  # its owner has exited now


def test_stale_temporary_files_and_old_folders_are_removed(tmp_path: Path) -> None:
    from alignrec.utils import io

    pid = dead_pid()
    target = tmp_path / "weights.bin"
    stale_file = tmp_path / f".weights.bin.{pid}-0-{io._HOST}.abcdefgh.tmp"
    stale_file.write_bytes(b"partial")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert not stale_file.exists() and target.read_bytes() == b"new"

    # a crash between the two renames leaves the previous version as .old; the next complete write removes it
    old = owned_temporary(tmp_path, "stage", pid, kind="old")
    stale_tmp = owned_temporary(tmp_path, "stage", pid)
    with atomic_directory(tmp_path / "stage") as tmp:
        assert not stale_tmp.exists() and old.exists()  # kept while it may be the only copy
        (tmp / "a.txt").write_text("x")
    assert not old.exists()
    assert leftovers(tmp_path) == []


def test_concurrent_writers_of_one_target_keep_each_others_temporaries(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    # a second process starts writing the same target while the first one is still building it
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from alignrec.utils.io import atomic_directory
        with atomic_directory(Path({str(tmp_path / 'stage')!r})) as tmp:
            (tmp / "mine.txt").write_text("second")
            print("inside", flush=True)
            sys.stdin.readline()
    """)
    with atomic_directory(tmp_path / "stage") as tmp:
        (tmp / "mine.txt").write_text("first")
        second = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert second.stdout is not None and second.stdout.readline() == "inside\n"
        assert (tmp / "mine.txt").read_text() == "first"  # the second writer did not remove our folder
    assert second.stdin is not None
    second.stdin.write("\n")
    second.stdin.flush()
    assert second.wait(timeout=60) == 0
    assert (tmp_path / "stage" / "mine.txt").read_text() == "second"  # the later complete write wins
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- JSON that breaks the parser


def test_deeply_nested_json_is_an_input_error(tmp_path: Path) -> None:
    from alignrec.utils.io import iter_jsonl

    # used to escape as a RecursionError traceback
    deep = tmp_path / "deep.json"
    deep.write_text('{"a": 1,\n "b": ' + "[" * 50_000 + "]" * 50_000 + "}", encoding="utf-8")
    with pytest.raises(InputError, match=r"deep\.json: line 2, column 50006: JSON nested 50001 levels deep"):
        read_json(deep)
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"a": 1}\n' + "[" * 50_000 + "]" * 50_000 + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"deep\.jsonl: line 2, column 50000: JSON nested 50000 levels deep"):
        list(iter_jsonl(lines))


def test_json_numbers_too_long_for_int_and_repeated_keys(tmp_path: Path) -> None:
    from alignrec.utils.io import iter_jsonl

    path = tmp_path / "x.json"
    path.write_text('{"a": [1,\n  ' + "7" * 5000 + "]}", encoding="utf-8")
    with pytest.raises(InputError, match=r"x\.json: line 2, column 3: a number of 5000 digits; expected at most 4300 digits"):
        read_json(path)
    lines = tmp_path / "x.jsonl"
    lines.write_text('{"a": 1}\n{"a": ' + "7" * 5000 + "}\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"x\.jsonl: line 2, column 7: a number of 5000 digits"):
        list(iter_jsonl(lines))

    path.write_text('{"a": {"k": 1, "k": 2}, "b": {"k": 1}}', encoding="utf-8")
    assert read_json(path) == {"a": {"k": 2}, "b": {"k": 1}}  # plain JSON semantics unless asked
    with pytest.raises(InputError, match=r"x\.json: line 1, column 16: key 'k' appears a second time in the same object"):
        read_json(path, unique_keys=True)


def test_json_readers_accept_a_byte_order_mark(tmp_path: Path) -> None:
    from alignrec.utils.io import iter_jsonl

    path = tmp_path / "bom.json"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}')
    assert read_json(path) == {"a": 1}
    lines = tmp_path / "bom.jsonl"
    lines.write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert list(iter_jsonl(lines)) == [(1, {"a": 1}), (2, {"a": 2})]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"a": 1}\n{"t": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl: line 2, byte 11: not UTF-8 text"):
        list(iter_jsonl(latin))


def test_read_safetensors_reads_every_tensor_and_names_a_bad_file(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], dtype=np.int64)}, str(good))
    tensors = read_safetensors(good)
    assert sorted(tensors) == ["a", "b"] and tensors["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and tensors["b"].tolist() == [7]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    for path in (bad, tmp_path / "missing.safetensors"):
        with pytest.raises(InputError, match=rf"{path.name}: not a readable safetensors file"):
            read_safetensors(path)
