"""One folder per failure case, as seed 004 saves them: ``cases/<id>/`` holds ``image.png``
(the test image, enlarged), ``meta.json`` (id, true class, each model's prediction,
confidence and top-5) and ``gradcam_<model>.png`` (the model's heatmap over the image).
Rendered from the run's ``gradcam.npz`` and its record; nothing is measured here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from ..io import atomic_write_bytes, atomic_write_text
from .io import record_classes, stems

SCALE = 8  # 28 px -> 224 px


def _png(rgb: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3), enlarged by SCALE (nearest)."""
    img = np.asarray(image, dtype=np.float32)
    img = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
    img = img.transpose(1, 2, 0)
    return img.repeat(SCALE, 0).repeat(SCALE, 1)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with the heatmap (jet) blended over it, enlarged."""
    base = _rgb(image)
    heat = colormaps["jet"](np.clip(np.asarray(cam, dtype=np.float32), 0, 1))[..., :3]
    heat = heat.repeat(SCALE, 0).repeat(SCALE, 1)
    return (1 - alpha) * base + alpha * heat


def write_cases(run_dir: Path, gradcam: dict, record: dict) -> list[str]:
    """Write every case folder; returns their relative paths."""
    classes = record_classes(record, max(len(record.get("classes") or []), 1 + int(np.max(gradcam["labels"], initial=0))))
    named = {int(c["id"]): c for c in record.get("named_cases") or []}
    model_stems = stems(list(gradcam["cams"]))
    out = []
    for r, case_id in enumerate(np.asarray(gradcam["ids"]).tolist()):
        folder = Path("cases") / f"{int(case_id):05d}"
        atomic_write_bytes(run_dir / folder / "image.png", _png(_rgb(gradcam["images"][r])))
        meta = {"id": int(case_id), "true_class": classes[int(gradcam["labels"][r])], "models": {}}
        for m, cams in gradcam["cams"].items():
            atomic_write_bytes(run_dir / folder / f"gradcam_{model_stems[m]}.png", _png(overlay(gradcam["images"][r], cams[r])))
            entry = (named.get(int(case_id)) or {}).get("models", {}).get(m) or {}
            meta["models"][m] = {
                "prediction": classes[int(gradcam["preds"][m][r])],
                "confidence": float(gradcam["confidences"][m][r]),
                "correct": int(gradcam["preds"][m][r]) == int(gradcam["labels"][r]),
                "top5": entry.get("top5"),
                "heatmap": f"gradcam_{model_stems[m]}.png",
            }
        atomic_write_text(run_dir / folder / "meta.json", json.dumps(meta, indent=2) + "\n")
        out.append(folder.as_posix())
    return out
