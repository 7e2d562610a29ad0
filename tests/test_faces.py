"""``find_faces``: an aligned face crop is found by the quick first search, with the framing the
full search gives; other images still get the full search."""

from __future__ import annotations

import pytest
from PIL import Image

faces = pytest.importorskip("deepfake_xai.faces")
if not faces.faces_available():
    pytest.skip("OpenCV or the MTCNN models are missing", allow_module_level=True)


def shared_faces(root, count: int = 4) -> list[Image.Image]:
    paths = sorted((root / "val" / "real").glob("*.jpg"))[: count // 2]
    paths += sorted((root / "val" / "fake").glob("*.jpg"))[: count // 2]
    return [Image.open(p).convert("RGB") for p in paths]


def test_an_aligned_crop_is_found_quickly_and_framed_alike(faces_sample, monkeypatch):
    calls = []
    detect = faces._detect
    monkeypatch.setattr(faces, "_detect", lambda *a: calls.append(a[3]) or detect(*a))
    for image in shared_faces(faces_sample):
        calls.clear()
        quick = faces.find_faces(image)
        assert len(calls) == 1 and calls[0] == pytest.approx(0.4 * min(image.size))
        full = faces.find_faces(image, aligned_first=False)
        assert len(quick) == 1 and full
        assert faces.framing_crop(image.size, quick[0]) is None
        assert faces.framing_crop(image.size, full[0]) is None
        assert abs(quick[0].x - full[0].x) <= 0.1 * full[0].width


def test_the_quick_search_sends_few_crops_to_the_later_networks(faces_sample, monkeypatch):
    """Merging overlapping candidates harder in the quick search leaves about one crop per
    aligned face for the output network (five with the reference's merging)."""
    crops = {24: 0, 48: 0}  # the refinement and output networks' input sides
    run = faces._run

    def counted(net, batch, outputs):
        crops[batch.shape[1]] += len(batch)
        return run(net, batch, outputs)

    monkeypatch.setattr(faces, "_run", counted)
    images = shared_faces(faces_sample, 8)
    for image in images:
        assert len(faces.find_faces(image)) == 1
    assert crops[48] <= 2 * len(images) and crops[24] <= 6 * len(images)


@pytest.mark.parametrize(("height", "searches"), [(512, 2), (384, 1)], ids=["square", "wide"])
def test_a_small_face_in_a_scene_gets_the_full_search(faces_sample, monkeypatch, height, searches):
    face = shared_faces(faces_sample, 2)[0].resize((96, 96))
    scene = Image.new("RGB", (512, height), (120, 130, 140))
    scene.paste(face, (300, 150))
    calls = []
    detect = faces._detect
    monkeypatch.setattr(faces, "_detect", lambda *a: calls.append(a[3]) or detect(*a))
    found = faces.find_faces(scene)
    assert len(calls) == searches and found
    assert 300 <= found[0].x + found[0].width / 2 <= 396


def test_two_faces_side_by_side_are_both_found(faces_sample):
    left, right = shared_faces(faces_sample, 2)
    pair = Image.new("RGB", (512, 256))
    pair.paste(left, (0, 0))
    pair.paste(right, (256, 0))
    found = faces.find_faces(pair)
    assert sorted(int(box.x + box.width / 2 >= 256) for box in found[:2]) == [0, 1]
