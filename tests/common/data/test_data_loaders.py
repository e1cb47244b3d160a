"""Loaders on tiny files that the tests write in each real format."""

from __future__ import annotations

import gzip
import pickle
import re
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from common.data import (
    DatasetCorruptError,
    DatasetNotFoundError,
    clear_cache,
    known_datasets,
    load_dataset,
)

Snapshot = Callable[[Path], list[tuple[str, int, int]]]
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
       "t10k-labels-idx1-ubyte")  # fmt: skip


def idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def idx_arrays(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        np.arange(12, dtype=np.uint8) % 10,
        rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        np.array([7, 2, 1, 0, 4], dtype=np.uint8),
    ]


def write_idx(folder: Path, arrays: list[np.ndarray], *, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in zip(IDX, arrays, strict=False):
        data = idx_bytes(arr)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_gz_or_extracted(tmp_path: Path, gz: bool, snapshot: Snapshot) -> None:
    arrays = idx_arrays()
    write_idx(tmp_path / "MNIST" / "raw", arrays, gz=gz)
    before = snapshot(tmp_path)
    ds = load_dataset("mnist", root=tmp_path)
    assert snapshot(tmp_path) == before
    assert ds.train.base_x.shape == (12, 1, 28, 28) and ds.train.base_x.dtype == torch.float32
    assert ds.test.base_y.dtype == torch.int64 and ds.test.y.tolist() == [7, 2, 1, 0, 4]
    assert torch.equal(ds.train.base_x[3, 0], torch.from_numpy(arrays[0][3]).float() / 255)
    assert ds.num_classes == 10 and ds.class_names[0] == "0"
    assert load_dataset("mnist", root=str(tmp_path)) is ds  # cached per process


def test_fashion_mnist_layout_and_names(tmp_path: Path) -> None:
    write_idx(tmp_path / "FashionMNIST" / "raw", idx_arrays())
    ds = load_dataset("fashion-mnist", root=tmp_path)
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert len(ds.train) == 12


def test_idx_found_in_cache_dir(tmp_path: Path, isolated_cache: Path) -> None:
    write_idx(isolated_cache / "data" / "MNIST" / "raw", idx_arrays())
    assert len(load_dataset("mnist", root=tmp_path / "empty").test) == 5


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"this is not gzip data at all", "cannot read"),
        (gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 5), "truncated IDX header"),
        (gzip.compress(b"\x12\x34\x56\x78" + b"\x00" * 64), "bad IDX magic"),
        (gzip.compress(idx_bytes(np.zeros((12, 28, 28), np.uint8))[:-10]), "size does not match"),
        (gzip.compress(idx_bytes(np.zeros((12, 28, 28), np.uint8)))[:-20], "cannot read"),
    ],
    ids=["not-gzip", "short-header", "bad-magic", "short-data", "torn-gzip"],  # (gzip: mtime)
)
def test_corrupt_idx_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_idx(folder, idx_arrays())
    (folder / f"{IDX[0]}.gz").write_bytes(content)
    with pytest.raises(DatasetCorruptError, match=problem) as info:
        load_dataset("mnist", root=tmp_path)
    assert f"{IDX[0]}.gz" in str(info.value) and "mnist" in str(info.value)


def test_missing_mnist_lists_every_path_and_how_to_fix(
    tmp_path: Path, isolated_cache: Path
) -> None:
    write_idx(tmp_path / "MNIST" / "raw", idx_arrays()[:3])  # labels of t10k missing
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", root=tmp_path)
    msg = str(info.value)
    assert "'mnist'" in msg
    for folder in (tmp_path / "MNIST" / "raw", isolated_cache / "data" / "MNIST" / "raw"):
        for stem in IDX:
            assert str(folder / stem) in msg
    assert "data.download=true" in msg and "FEDREPLAY_DATA_ROOT" in msg
    assert not (isolated_cache / "data").exists()  # no download -> nothing written


def test_retinamnist_downloads_the_published_file_with_its_checksum(
    tmp_path: Path, isolated_cache: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the medmnist package: the MedMNIST v2 file, fetched by torchvision's
    download_url with the MD5 medmnist pins (a mismatch there is a failed download)."""
    import shutil

    import torchvision.datasets.utils

    calls: list[tuple[str, str, str, str]] = []

    def fake_download(url: str, root: str, filename: str, md5: str) -> None:
        calls.append((url, root, filename, md5))
        shutil.copy(shared_data / "medmnist" / "retinamnist.npz", Path(root) / filename)

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download)
    ds = load_dataset("retinamnist", root=tmp_path / "empty", download=True)
    ((url, root, filename, md5),) = calls
    assert url.startswith("https://zenodo.org/records/10519652/files/retinamnist.npz")
    assert root == str(isolated_cache / "data" / "medmnist") and filename == "retinamnist.npz"
    assert md5 == "bd4c0672f1bba3e3a89f0e4e876791e4"
    assert len(ds.test) == 400


def test_download_goes_to_the_cache_not_the_root(
    tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, snapshot: Snapshot
) -> None:
    import torchvision.datasets

    calls: list[str] = []

    class FakeMNIST:
        def __init__(self, root: str, download: bool = False) -> None:
            calls.append(root)
            write_idx(Path(root) / "MNIST" / "raw", idx_arrays(), gz=False)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    root = tmp_path / "root"
    root.mkdir()
    before = snapshot(root)
    ds = load_dataset("mnist", root=root, download=True)
    assert calls == [str(isolated_cache / "data")]
    assert snapshot(root) == before and len(ds.train) == 12

    def broken(root: str, download: bool = False) -> None:
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", broken)
    with pytest.raises(DatasetNotFoundError, match="download failed: network unreachable"):
        load_dataset("fashion-mnist", root=root, download=True)


def write_npz(path: Path, *, rgb: bool, k: int, drop: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 20), ("val", 4), ("test", 8)):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % k).reshape(n, 1).astype(np.uint8)
    arrays.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, allow_pickle=False, **arrays)
    return arrays


def test_medmnist_npz_rgb_and_gray(tmp_path: Path, snapshot: Snapshot) -> None:
    arrays = write_npz(tmp_path / "medmnist" / "bloodmnist.npz", rgb=True, k=8)
    write_npz(tmp_path / "pneumoniamnist.npz", rgb=False, k=2)  # directly under the root
    before = snapshot(tmp_path)
    blood = load_dataset("bloodmnist", root=tmp_path)
    assert blood.train.base_x.shape == (20, 3, 28, 28) and len(blood.test) == 8
    assert blood.num_classes == 8 and blood.train.y.tolist()[:9] == [0, 1, 2, 3, 4, 5, 6, 7, 0]
    pixel = arrays["train_images"][2, 5, 6]  # (H, W, C) in the file
    assert torch.allclose(blood.train.base_x[2, :, 5, 6], torch.from_numpy(pixel).float() / 255)
    pneu = load_dataset("pneumoniamnist", root=tmp_path)
    assert pneu.shape == (1, 28, 28) and pneu.num_classes == 2
    assert snapshot(tmp_path) == before


def test_medmnist_corrupt_and_missing(tmp_path: Path) -> None:
    write_npz(tmp_path / "medmnist" / "pathmnist.npz", rgb=True, k=9, drop="test_labels")
    with pytest.raises(DatasetCorruptError, match=re.escape("pathmnist.npz")):
        load_dataset("pathmnist", root=tmp_path)
    good = tmp_path / "good.npz"
    write_npz(good, rgb=True, k=9)
    (tmp_path / "medmnist" / "dermamnist.npz").write_bytes(good.read_bytes()[:3000])
    with pytest.raises(DatasetCorruptError, match=re.escape("dermamnist.npz")):
        load_dataset("dermamnist", root=tmp_path)
    write_npz(tmp_path / "medmnist" / "breastmnist.npz", rgb=False, k=5)  # labels 0..4 > 2
    with pytest.raises(DatasetCorruptError, match=r"labels run from 0 to 4.*must be 0\.\.1"):
        load_dataset("breastmnist", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=re.escape("octmnist.npz")) as info:
        load_dataset("octmnist", root=tmp_path)
    assert str(tmp_path / "medmnist" / "octmnist.npz") in str(info.value)


@pytest.mark.parametrize("folder", ["SVHN", "svhn"])
def test_svhn_mat(tmp_path: Path, folder: str) -> None:
    import scipy.io

    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    (tmp_path / folder).mkdir()
    scipy.io.savemat(
        tmp_path / folder / "train_32x32.mat", {"X": x, "y": [[10], [1], [2], [3], [10], [9]]}
    )
    scipy.io.savemat(tmp_path / folder / "test_32x32.mat", {"X": x[..., :2], "y": [[5], [10]]})
    ds = load_dataset("svhn", root=tmp_path)
    assert ds.train.base_x.shape == (6, 3, 32, 32)
    assert ds.train.y.tolist() == [0, 1, 2, 3, 0, 9] and ds.test.y.tolist() == [5, 0]
    assert torch.allclose(
        ds.train.base_x[4, 2, 7, 9], torch.tensor(x[7, 9, 2, 4] / 255.0, dtype=torch.float32)
    )
    (tmp_path / folder / "test_32x32.mat").write_bytes(b"MATLAB garbage")
    clear_cache()
    with pytest.raises(DatasetCorruptError, match=re.escape("test_32x32.mat")):
        load_dataset("svhn", root=tmp_path)


def test_cifar10_pickles(tmp_path: Path) -> None:
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(3)
    batches = {f"data_batch_{i}": 4 for i in range(1, 6)} | {"test_batch": 3}
    for name, n in batches.items():
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with (base / name).open("wb") as fh:
            pickle.dump({"data": data, "labels": list(range(n)), "batch_label": name}, fh)
    names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    with (base / "batches.meta").open("wb") as fh:
        pickle.dump({"label_names": names}, fh)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.train.base_x.shape == (20, 3, 32, 32) and len(ds.test) == 3
    assert ds.class_names == tuple(names) and ds.train.y.tolist()[:5] == [0, 1, 2, 3, 0]
    with (base / "data_batch_1").open("rb") as fh:
        first = pickle.load(fh)["data"][1]
    assert torch.allclose(
        ds.train.base_x[1, 1, 0, 0], torch.tensor(first[1024] / 255.0, dtype=torch.float32)
    )
    (base / "test_batch").write_bytes(b"\x80\x04truncated")
    clear_cache()
    with pytest.raises(DatasetCorruptError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)


def write_png(path: Path, size: tuple[int, int], mode: str, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, int, int] = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, size, color).save(path)


def test_image_folder_train_test_gray(tmp_path: Path, snapshot: Snapshot) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for c, cls in enumerate(["zebra", "ant", "cat"]):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", (6, 5), "L", 40 * c + i)
    before = snapshot(tmp_path)
    ds = load_dataset("folder", root=tmp_path)
    assert snapshot(tmp_path) == before
    assert ds.class_names == ("ant", "cat", "zebra")
    assert ds.train.base_x.shape == (9, 1, 5, 6) and len(ds.test) == 3
    assert ds.train.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.allclose(ds.train.base_x[3], torch.full((1, 5, 6), 80 / 255))  # cat/0.png


def test_image_folder_auto_split_colour(tmp_path: Path) -> None:
    for i in range(10):
        write_png(tmp_path / "a" / f"{i}.png", (16, 12), "RGB", 10)
        write_png(tmp_path / "b" / f"{i}.png", (16, 12), "RGB", 200)
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    ds = load_dataset("folder", root=tmp_path)
    assert ds.shape == (3, 12, 16)
    assert (len(ds.train), len(ds.test)) == (16, 4)
    assert sorted(ds.test.y.tolist()) == [0, 0, 1, 1]
    b = ds.train.base_x[ds.train.y == 1][0]
    assert torch.allclose(b[:, 3, 3], torch.tensor([200, 0, 55]) / 255.0, atol=1e-6)


@pytest.mark.parametrize("odd", ["mode", "size"])
def test_image_folder_refuses_mixed_channels_and_sizes_naming_the_files(
    tmp_path: Path, odd: str
) -> None:
    for i in range(4):
        write_png(tmp_path / "a" / f"{i}.png", (8, 8), "L", 10)
        write_png(tmp_path / "b" / f"{i}.png", (8, 8), "L", 200)
    if odd == "mode":
        write_png(tmp_path / "b" / "odd.png", (8, 8), "RGB", 9)
    else:
        write_png(tmp_path / "b" / "odd.png", (9, 8), "L", 9)
    what = "channel counts" if odd == "mode" else "sizes"
    with pytest.raises(DatasetCorruptError, match=f"mixed {what}.*odd.png"):
        load_dataset("folder", root=tmp_path)


def test_image_folder_follows_the_declared_label_space(tmp_path: Path) -> None:
    """Two sites with the same classes get the same labels, whatever their folders sort as;
    a site whose folders differ is refused with the names listed."""
    for i in range(5):
        for c, cls in enumerate(["normal", "drusen", "cnv"]):
            write_png(tmp_path / "site" / cls / f"{i}.png", (4, 4), "L", 50 * c)
    declared = ("normal", "drusen", "cnv")
    ds = load_dataset("folder", root=tmp_path / "site", classes=declared)
    assert ds.class_names == declared
    assert torch.allclose(ds.train.base_x[ds.train.y == 0], torch.zeros(1))  # normal = 0
    (tmp_path / "site" / "cnv").rename(tmp_path / "site" / "CNV")
    clear_cache()
    with pytest.raises(DatasetCorruptError, match=r"'CNV'.* not declared.*'cnv'.* no folder"):
        load_dataset("folder", root=tmp_path / "site", classes=declared)
    (tmp_path / "site" / "CNV").rename(tmp_path / "site" / "cnv")
    for f in (tmp_path / "site" / "drusen").iterdir():
        f.unlink()
    clear_cache()
    with pytest.raises(DatasetCorruptError, match="'drusen' has no images"):
        load_dataset("folder", root=tmp_path / "site", classes=declared)
    with pytest.raises(DatasetCorruptError, match=r"not the declared data\.classes"):
        load_dataset("digits", classes=("a", "b"))


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="<class>"):
        load_dataset("folder", root=tmp_path / "nothing")
    write_png(tmp_path / "x" / "0.png", (4, 4), "L", 1)
    (tmp_path / "x" / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetCorruptError, match=re.escape("1.png")) as corrupt:
        load_dataset("folder", root=tmp_path)
    assert "download" not in str(corrupt.value), "a site's own images cannot be downloaded"


def test_digits_offline_split() -> None:
    ds = load_dataset("digits")
    assert ds.train.base_x.shape == (1438, 1, 8, 8) and len(ds.test) == 359
    assert float(ds.train.base_x.min()) == 0.0 and float(ds.train.base_x.max()) == 1.0
    counts = torch.bincount(ds.test.y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified 20 %
    assert load_dataset("digits", root="/somewhere/else") is ds
    clear_cache()
    again = load_dataset("DIGITS")
    assert again is not ds and torch.equal(again.test.index, ds.test.index)
    assert torch.equal(again.test.y, ds.test.y)


def test_the_public_proxy_is_mnist_shaped_offline_and_holds_no_record_twice() -> None:
    """DP settings are chosen on ``digits-mnist``; a site's budget follows each record's
    content, so a proxy that repeated an image would be refused as records spent under
    another site id. No site of any benchmark holds it: it is drawn from sklearn's digits."""
    ds = load_dataset("digits-mnist", root="/nonexistent")  # no files needed
    assert ds.train.x.shape == (60_000, 1, 28, 28) and ds.num_classes == 10
    assert set(ds.train.y.tolist()) == set(range(10)) == set(ds.test.y.tolist())
    flat = ds.train.x.flatten(1)
    assert len(torch.unique(flat, dim=0)) == len(flat)  # every draw a different image
    assert float(flat.min()) >= 0.0 and float(flat.max()) <= 1.0
    centre, border = ds.train.x[:, :, 4:24, 4:24].mean(), ds.train.x[:, :, :2].mean()
    assert centre > 10 * border  # centred in its box, as MNIST's digits are


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet")
    assert "mnist" in str(info.value) and "retinamnist" in str(info.value)
    assert {"bloodmnist", "pathmnist", "organamnist", "tissuemnist"} <= set(known_datasets())


def test_declared_classes_do_not_load_a_dataset_twice() -> None:
    clear_cache()
    names = tuple(str(i) for i in range(10))
    assert load_dataset("digits", classes=names) is load_dataset("digits")
