"""The OCR engine: RapidOCR with PaddleOCR's PP-OCRv6 models, run by ONNX Runtime on the CPU.

Chosen by measurement (bench/README.md, "Scan"): on the rendered card photos it read the
name, HP and number far more often than Debian's Tesseract 5.3 at a similar cost per photo,
and its models ship inside the `rapidocr` wheel, so installing the package installs them.
They are named here by path: RapidOCR downloads a model it cannot find, and we never want
that (a missing file is an error that says to reinstall).

One engine per process (building its ONNX sessions takes about a second), used by one
caller at a time: the lock keeps concurrent requests from oversubscribing the CPU, and
`threads` bounds each run (1 by default: the server has other work on its cores).
Text-line orientation classification is off: the reader straightens the card itself and
tries it upside down when the upright reading finds nothing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cardmint.errors import CardmintError

MODELS = {"Det": "PP-OCRv6_det_small.onnx", "Rec": "PP-OCRv6_rec_small.onnx",
          "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx"}
DET_MAX_SIDE = 480  # px: detection runs on the bands downscaled to this (rec reads full size)
ENGINE_NAME = "rapidocr PP-OCRv6 small (onnxruntime)"


class OcrUnavailable(CardmintError):
    """The OCR engine or its models are not installed."""


@dataclass(frozen=True)
class Line:
    """One line of text the engine read, with where it is (corners in the image read)."""

    text: str
    score: float
    box: tuple[tuple[float, float], ...]

    @property
    def top(self) -> float:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.box)

    @property
    def left(self) -> float:
        return min(x for x, _ in self.box)

    @property
    def right(self) -> float:
        return max(x for x, _ in self.box)

    @property
    def height(self) -> float:
        return self.bottom - self.top


def model_paths() -> dict[str, Path]:
    """The model files inside the installed rapidocr package."""
    try:
        root = Path(str(resources.files("rapidocr"))) / "models"
    except ModuleNotFoundError:
        raise OcrUnavailable("the OCR engine is not installed (pip install rapidocr "
                             "onnxruntime; `make venv` does)") from None
    paths = {task: root / name for task, name in MODELS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise OcrUnavailable(f"OCR model files missing: {', '.join(missing)}; reinstall "
                             "rapidocr (its wheel ships them)")
    return paths


class OcrEngine:
    """RapidOCR, configured once: models by path, no classification, quiet."""

    name = ENGINE_NAME

    def __init__(self, *, threads: int = 1) -> None:
        paths = model_paths()
        from rapidocr import RapidOCR  # imported here: ~0.7 s, only where OCR runs

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        params: dict[str, Any] = {
            "Global.log_level": "error", "Global.use_cls": False,
            "Det.limit_type": "max", "Det.limit_side_len": DET_MAX_SIDE,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            # one line per run: a batch is padded to its widest line (the copyright line),
            # which made the usual six lines cost a fifth more
            "Rec.rec_batch_num": 1,
        }
        for task, path in paths.items():
            params[f"{task}.model_path"] = str(path)
        self._engine = RapidOCR(params=params)
        self._lock = threading.Lock()

    def read(self, bgr: npt.NDArray[Any], *, sensitive: bool = False) -> list[Line]:
        """Every line found in the image (BGR, as OpenCV holds it), top to bottom.
        `sensitive`: lower detection and recognition thresholds, for a second look at a
        band where nothing usable was found (blurred small print)."""
        options: dict[str, Any] = {"box_thresh": 0.3, "text_score": 0.3} if sensitive else {}
        with self._lock:
            result: Any = self._engine(bgr, use_cls=False, **options)
        if result.txts is None or result.boxes is None:
            return []
        lines = [Line(str(text), float(score),
                      tuple((float(x), float(y)) for x, y in np.asarray(box).tolist()))
                 for text, score, box in zip(result.txts, result.scores, result.boxes,
                                             strict=True)]
        return sorted(lines, key=lambda ln: (ln.top, ln.left))


@lru_cache(maxsize=4)
def engine(threads: int = 1) -> OcrEngine:
    """The process's engine (made on first use)."""
    return OcrEngine(threads=threads)
