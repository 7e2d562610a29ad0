import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_xai.data import (
    IMAGE_SUFFIXES,
    Augmentation,
    ImageDataset,
    Sample,
    carve_split,
    discover,
    find_duplicates,
    fingerprint,
    leaks,
    make_loader,
    normalise_label,
    read_manifest,
    split_counts,
    stratified_split,
    subsample,
    write_manifest,
)
from deepfake_xai.preprocessing import Harmonization

_counter = iter(range(10**6))


def _image(path: Path, size: int = 24, fmt: str | None = None) -> Path:
    """A small image with content unique to this call (so no two files are identical)."""
    rng = np.random.default_rng(next(_counter))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def _classes(root: Path, n: int = 3, names=("real", "fake"), suffix: str = ".png") -> None:
    for name in names:
        for i in range(n):
            _image(root / name / f"{name}_{i}{suffix}")


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("real", "real"),
        ("REAL", "real"),
        ("Authentic", "real"),
        ("genuine", "real"),
        ("original", "real"),
        ("pristine", "real"),
        ("0", "real"),
        ("0_real", "real"),
        ("fake", "fake"),
        ("Fake ", "fake"),
        ("synthetic", "fake"),
        ("generated", "fake"),
        ("AI-generated", "fake"),
        ("deepfake", "fake"),
        ("manipulated", "fake"),
        ("ai", "fake"),
        ("1", "fake"),
        ("cats", None),
        ("", None),
    ],
)
def test_normalise_label(name, label):
    assert normalise_label(name) == label


def test_discover_class_folders(tmp_path):
    _classes(tmp_path, n=3)
    _image(tmp_path / "masks" / "000001.png")  # the synthetic set's masks are not samples
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "real" / ".hidden.png").write_bytes(b"x")
    samples = discover(tmp_path)
    assert [s.label for s in samples] == ["fake"] * 3 + ["real"] * 3
    assert all(s.split is None and s.path.is_absolute() for s in samples)
    assert samples == sorted(samples)
    assert samples[0].target == 1 and samples[-1].target == 0


def test_discover_split_folders_with_synonyms(tmp_path):
    for split in ("train", "valid", "test"):
        _classes(tmp_path / split, n=2, names=("Real", "Fake"), suffix=".jpg")
    samples = discover(tmp_path)
    assert split_counts(samples) == {
        split: {"fake": 2, "real": 2} for split in ("test", "train", "val")
    }


def test_discover_kaggle_layout(tmp_path):
    inner = tmp_path / "real_vs_fake" / "real-vs-fake"
    for split in ("train", "valid", "test"):
        _classes(inner / split, n=1, suffix=".jpg")
    (tmp_path / "train.csv").write_text("id,label\n")
    samples = discover(tmp_path)
    assert len(samples) == 6
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert all("real-vs-fake" in s.path.parts for s in samples)


def test_discover_csv_manifest(tmp_path):
    _image(tmp_path / "imgs" / "a.png")
    _image(tmp_path / "imgs" / "b.png")
    _image(tmp_path / "c.png")
    csv_path = tmp_path / "meta" / "list.csv"
    csv_path.parent.mkdir()
    csv_path.write_text(
        "Path,Label,split,group\n"
        "../imgs/a.png,Real,train,studio\n"
        "../imgs/b.png,generated,valid,\n"
        f"{tmp_path / 'c.png'},,,\n"
    )
    c, a, b = discover(csv_path)  # sorted by path
    assert a == Sample(tmp_path / "imgs" / "a.png", "real", "train", "studio")
    assert b == Sample(tmp_path / "imgs" / "b.png", "fake", "val", None)
    assert c == Sample(tmp_path / "c.png")
    csv_path.write_text("path,label\nx.png,dog\n")
    with pytest.raises(ValueError, match="line 2: unknown label 'dog'"):
        discover(csv_path)
    csv_path.write_text("file,label\nx.png,real\n")
    with pytest.raises(ValueError, match="needs a 'path' column"):
        read_manifest(csv_path)


def test_discover_unlabelled_glob_file_and_list(tmp_path):
    plain = tmp_path / "plain"
    for name in ("x.png", "y.jpg", "deep/z.webp"):
        _image(plain / name, fmt="WEBP" if name.endswith("webp") else None)
    unlabelled = discover(plain)
    assert len(unlabelled) == 3 and all(s.label is None for s in unlabelled)
    assert len(discover(plain, recursive=False)) == 2
    _classes(tmp_path / "set", n=2)
    globbed = discover(str(tmp_path / "set" / "*" / "*.png"))
    assert [s.label for s in globbed] == ["fake", "fake", "real", "real"]
    assert discover(globbed[0].path) == [globbed[0]]
    both = discover([plain, tmp_path / "set", str(tmp_path / "set" / "real" / "*.png")])
    assert len(both) == 7  # the overlapping glob adds nothing
    with pytest.raises(FileNotFoundError, match="matches no images"):
        discover(str(tmp_path / "nothing" / "*.png"))
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        discover(tmp_path / "missing")


def test_unknown_class_folders_are_a_clear_error(tmp_path):
    _classes(tmp_path / "animals", names=("cats", "dogs"), n=1)
    with pytest.raises(ValueError, match=r"\['cats', 'dogs'\].*none is a class name.*real/fake"):
        discover(tmp_path / "animals")
    _classes(tmp_path / "odd", names=("real", "fakes2"), n=1)
    with pytest.raises(ValueError, match=r"\['fakes2'\] are not a class"):
        discover(tmp_path / "odd")
    _classes(tmp_path / "split" / "train", names=("real", "other"), n=1)
    with pytest.raises(ValueError, match=r"train: folders \['other'\] are not a class"):
        discover(tmp_path / "split")
    _classes(tmp_path / "mixed", n=1)
    _classes(tmp_path / "mixed" / "train", n=1)
    with pytest.raises(ValueError, match="mixes split folders"):
        discover(tmp_path / "mixed")


def _samples(n_per_class: int, groups=(None,)) -> list[Sample]:
    return [
        Sample(Path(f"/data/{label}/{group}_{i:03d}.png"), label, None, group)
        for label in ("real", "fake")
        for group in groups
        for i in range(n_per_class)
    ]


def test_stratified_split_ratios_and_determinism():
    samples = _samples(20, groups=("a", "b"))
    split = stratified_split(samples, seed=3)
    for label in ("real", "fake"):
        for group in ("a", "b"):
            stratum = [s.split for s in split if s.label == label and s.group == group]
            assert (stratum.count("train"), stratum.count("val"), stratum.count("test")) == (
                16,
                2,
                2,
            )
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    again = {s.path: s.split for s in stratified_split(shuffled, seed=3)}
    assert again == {s.path: s.split for s in split}
    other = {s.path: s.split for s in stratified_split(samples, seed=4)}
    assert other != again
    assert [s.path for s in split] == [s.path for s in samples]


def test_stratified_split_keeps_existing_splits():
    samples = _samples(10)
    fixed = [s if i % 5 else Sample(s.path, s.label, "test") for i, s in enumerate(samples)]
    split = stratified_split(fixed, ratios=(1, 0, 0))
    for before, after in zip(fixed, split, strict=True):
        assert after.split == (before.split or "train")
    with pytest.raises(ValueError, match="ratios must be 3 non-negative"):
        stratified_split(samples, ratios=(0.5, 0.5))


def test_duplicates_stay_together_and_leaks_are_found(tmp_path):
    _classes(tmp_path, n=10)
    for i in range(4):  # exact copies of real_i under another name
        shutil.copy(tmp_path / "real" / f"real_{i}.png", tmp_path / "real" / f"copy_{i}.png")
    samples = discover(tmp_path)
    pairs = find_duplicates(samples)
    assert len(pairs) == 4
    assert {(a.path.name, b.path.name) for a, b in pairs} == {
        (f"copy_{i}.png", f"real_{i}.png") for i in range(4)
    }
    for seed in range(5):
        split = {s.path.name: s.split for s in stratified_split(samples, seed=seed)}
        assert all(split[f"copy_{i}.png"] == split[f"real_{i}.png"] for i in range(4))
        assert not leaks(stratified_split(samples, seed=seed))
    # a copy inherits the split its twin already has
    pinned = [
        Sample(s.path, s.label, "test" if s.path.name == "real_0.png" else None) for s in samples
    ]
    assert {s.path.name: s.split for s in stratified_split(pinned)}["copy_0.png"] == "test"
    leaky = [
        Sample(s.path, s.label, "test" if s.path.name == "copy_1.png" else "train") for s in samples
    ]
    assert [(a.path.name, b.path.name) for a, b in leaks(leaky)] == [("copy_1.png", "real_1.png")]


def test_carve_split_and_subsample():
    samples = [Sample(s.path, s.label, "train") for s in _samples(18)]
    samples += [
        Sample(Path(f"/data/v/{label}{i}.png"), label, "val")
        for label in ("real", "fake")
        for i in range(2)
    ]
    carved = carve_split(samples, "test", fraction=1 / 9)
    assert split_counts(carved) == {
        "test": {"fake": 2, "real": 2},
        "train": {"fake": 16, "real": 16},
        "val": {"fake": 2, "real": 2},
    }
    small = subsample(carved, 10, seed=0)
    counts = split_counts(small)
    assert sum(counts[s]["real"] for s in counts) == 10 and counts["val"] == {"fake": 1, "real": 1}
    assert subsample(carved, 10, seed=0) == small
    with pytest.raises(ValueError, match="fraction must be in"):
        carve_split(samples, "test", fraction=1.5)


def test_manifest_round_trip(tmp_path):
    samples = stratified_split(discover(_make_set(tmp_path / "set")))
    written = write_manifest(samples, tmp_path / "runs" / "split.csv")
    assert "../set/" in written.read_text()
    assert read_manifest(written) == sorted(samples)


def _make_set(root: Path, n: int = 4) -> Path:
    _classes(root, n=n)
    return root


def test_fingerprint_ignores_location_but_not_content(tmp_path):
    first = discover(_make_set(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert fingerprint(discover(tmp_path / "b")) == fingerprint(first)
    relabelled = [Sample(s.path, "fake") for s in first]
    assert fingerprint(relabelled) != fingerprint(first)
    assert fingerprint(stratified_split(first)) != fingerprint(first)


def test_fingerprint_of_relative_and_absolute_paths_together(tmp_path, monkeypatch):
    """Training adds pseudo-fakes written under a relative run folder to a dataset given by an
    absolute path (it failed at the first checkpoint, after a whole epoch)."""
    samples = discover(_make_set(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    relative = [
        Sample(Path("data") / s.path.relative_to(tmp_path / "data"), s.label) for s in samples
    ]
    assert fingerprint(relative) == fingerprint(samples)
    mixed = samples[::2] + relative[1::2]
    assert fingerprint(mixed) == fingerprint(samples)


def test_loader_skips_unreadable_files(tmp_path):
    _make_set(tmp_path, n=3)
    (tmp_path / "fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "real" / "empty.jpg").write_bytes(b"")
    dataset = ImageDataset(discover(tmp_path), Harmonization(image_size=16))
    loader = make_loader(dataset, batch_size=4)
    seen = []
    for images, targets, indices in loader:
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 16, 16)
        assert len(images) == len(targets) == len(indices)
        seen += indices.tolist()
    assert len(seen) == 6
    assert [p.name for p, _ in loader.errors] == ["broken.png", "empty.jpg"]
    assert "empty file" in dict(loader.errors)[tmp_path / "real" / "empty.jpg"]
    assert all(dataset.samples[i].path.name not in ("broken.png", "empty.jpg") for i in seen)


def test_loader_errors_cross_worker_processes(tmp_path):
    _make_set(tmp_path, n=2)
    (tmp_path / "fake" / "broken.png").write_bytes(b"not an image at all")
    loader = make_loader(
        ImageDataset(discover(tmp_path), Harmonization(image_size=16)), batch_size=2, num_workers=1
    )
    assert sum(len(idx) for _, _, idx in loader) == 4
    assert [p.name for p, _ in loader.errors] == ["broken.png"]


def test_loader_is_seeded_and_augments(tmp_path):
    dataset = ImageDataset(
        discover(_make_set(tmp_path, n=4)), Harmonization(image_size=16), augment=Augmentation()
    )
    image, target, index = dataset[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    assert target in (0.0, 1.0) and index == 0

    def order(seed):
        torch.manual_seed(0)
        return [i for _, _, idx in make_loader(dataset, 3, shuffle=True, seed=seed) for i in idx]

    assert order(1) == order(1)
    assert order(1) != order(2)
    unlabelled = ImageDataset([Sample(dataset.samples[0].path)], Harmonization(image_size=16))
    assert np.isnan(unlabelled[0][1])


def test_image_suffixes_cover_common_formats():
    assert {".jpg", ".jpeg", ".png", ".webp"} <= IMAGE_SUFFIXES


def test_shared_faces_sample_layout(faces_sample, tmp_path):
    from deepfake_xai.training import TrainConfig, prepare_split

    samples = discover(faces_sample)
    counts = split_counts(samples)
    assert set(counts) == {"train", "val"}
    assert counts["train"]["real"] == counts["train"]["fake"] > counts["val"]["real"] > 0
    split = prepare_split(samples, tmp_path, TrainConfig(limit_per_class=100), log=lambda m: None)
    carved = split_counts(split)
    assert set(carved) == {"train", "val", "test"} and carved["test"]["fake"] > 0
    assert not leaks(split)
