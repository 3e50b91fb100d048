"""``--dataset ml-100k``: fetch the RecBole wheel with pip into the cache, extract, prepare.

The default tests replace the download by a tiny fake wheel built here (no network); one
integration test does the real download.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

import alignrec.data.sources.recbole as recbole
from alignrec.data import load_dataset
from alignrec.data.dataset import DatasetFormatError
from alignrec.data.prepare import PrepareConfig, prepare

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"{user}\t{item}\t3\t{100 * user + step}\n" for user in (1, 2) for step, item in enumerate((3, 1, 2))
)
ITEM = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n1\tToy Story\t1995\tAnimation Comedy\n" \
       "2\tHeat\t1995\tAction\n3\tAlien\t1979\tHorror Sci-Fi\n"


def fake_wheel(folder: Path, members: dict[str, str]) -> Path:
    wheel = folder / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        for name, text in members.items():
            archive.writestr(f"recbole/dataset_example/ml-100k/{name}", text)
    return wheel


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """An empty cache, no installed recbole, and a download that builds a fake wheel (counted)."""
    monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recbole, "installed_recbole_dir", lambda: None)
    calls = {"downloads": 0}

    def download(destination: Path) -> Path:
        calls["downloads"] += 1
        return fake_wheel(destination, {"ml-100k.inter": INTER, "ml-100k.item": ITEM})

    monkeypatch.setattr(recbole, "download_wheel", download)
    return calls


def test_embedded_dataset_is_fetched_once_into_the_cache(tmp_path: Path, offline: dict[str, int]) -> None:
    prepare(PrepareConfig(dataset="ml-100k"), tmp_path / "run")
    data = load_dataset(tmp_path / "run")
    assert [[data.item_ids[i] for i in seq] for seq in data.sequences] == [["3", "1", "2"], ["3", "1", "2"]]
    assert data.items[data.item_index_of["3"]].title == "Alien (1979)"
    assert data.stats["source"]["origin"] == "recbole==1.2.1 wheel, recbole/dataset_example/ml-100k"
    cached = tmp_path / "cache" / "recbole-1.2.1" / "ml-100k"
    assert sorted(p.name for p in cached.iterdir()) == ["ml-100k.inter", "ml-100k.item"]
    assert (cached / "ml-100k.inter").read_text() == INTER
    assert offline["downloads"] == 1
    prepare(PrepareConfig(dataset="ml-100k"), tmp_path / "run2")  # second time: from the cache
    assert offline["downloads"] == 1


def test_wheel_without_the_data_set_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recbole, "installed_recbole_dir", lambda: None)
    monkeypatch.setattr(recbole, "download_wheel", lambda destination: fake_wheel(destination, {"ml-100k.inter": INTER}))
    with pytest.raises(DatasetFormatError, match=r"recbole/dataset_example/ml-100k/ml-100k\.item not found in the wheel"):
        prepare(PrepareConfig(dataset="ml-100k"), tmp_path / "run")
    assert not (tmp_path / "cache" / "recbole-1.2.1" / "ml-100k").exists()  # nothing half-extracted


def test_failed_download_names_the_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recbole, "installed_recbole_dir", lambda: None)

    def no_network(command, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (no network)")

    monkeypatch.setattr(recbole.subprocess, "run", no_network)
    with pytest.raises(DatasetFormatError) as caught:
        prepare(PrepareConfig(dataset="ml-100k"), tmp_path / "run")
    message = str(caught.value)
    assert "could not fetch recbole==1.2.1" in message and "(no network)" in message
    assert "pip install --no-deps recbole==1.2.1" in message


def test_installed_recbole_is_used_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = tmp_path / "site" / "recbole" / "dataset_example"
    (example / "ml-100k").mkdir(parents=True)
    (example / "ml-100k" / "ml-100k.inter").write_text(INTER)
    (example / "ml-100k" / "ml-100k.item").write_text(ITEM)
    monkeypatch.setattr(recbole, "installed_recbole_dir", lambda: example)
    monkeypatch.setattr(recbole, "download_wheel", lambda destination: pytest.fail("must not download"))
    assert recbole.embedded_dataset_dir("ml-100k") == example / "ml-100k"


@pytest.mark.integration
def test_real_download_of_ml_100k(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs PyPI: the real `pip download recbole==1.2.1` into an empty cache."""
    monkeypatch.setenv("ALIGNREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(recbole, "installed_recbole_dir", lambda: None)
    prepare(PrepareConfig(dataset="ml-100k"), tmp_path / "run")
    data = load_dataset(tmp_path / "run")
    assert (data.num_users, data.num_items, data.stats["interactions"]) == (943, 1682, 100000)
    assert data.items[0].title == "Toy Story (1995)"
