"""The prediction cache: the current model's detections on every image of the store, in an SQLite
file beside the store (``labels.qs.predictions``), keyed by image id and model identity (its
version and the file it was read from, so a version written again under the same number is another
model). A background thread fills it for the model the server predicts with, image by image, and
starts again when that model changes; ``GET /api/cache`` says how far it is.

It answers what the gallery filters need without a forward pass per request: images with an
``unknown`` detection, and checked images where the model disagrees with their boxes (a verdict
per image, kept with the image's version and the taxonomy version it was judged on, so only
images edited since are judged again). Unknown detections keep their embedding, which
:mod:`quickstudy.serve.unknowns` groups.

The store is read through its own SQL (attached read-only to the cache's connection), never written
here: the cache can be deleted at any time and is filled again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from quickstudy.errors import QuickstudyError
from quickstudy.labels.store import Store
from quickstudy.serve.predictors import MODEL, CurrentModel

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
BATCH = 8
_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    detections TEXT NOT NULL,      -- JSON [{box, class, score}] at the operating thresholds
    unknowns INTEGER NOT NULL,     -- how many of them are 'unknown'
    error TEXT,                    -- why the image could not be predicted (then no detections)
    PRIMARY KEY (model, image_id)
);
CREATE TABLE IF NOT EXISTS embeddings (  -- of 'unknown' detections only: what groups compare
    model TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    detection INTEGER NOT NULL,    -- its index in the image's detections
    vector BLOB NOT NULL,          -- float32, unit norm
    PRIMARY KEY (model, image_id, detection)
);
CREATE TABLE IF NOT EXISTS verdicts (
    model TEXT NOT NULL,
    image_id INTEGER NOT NULL,
    image_version INTEGER NOT NULL,
    taxonomy_version INTEGER NOT NULL,
    disagrees INTEGER NOT NULL,
    PRIMARY KEY (model, image_id)
);
"""


def _uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path.resolve()))


def cache_path(store: Path) -> Path:
    return store.parent / f"{store.name}.predictions"


def disagrees(
    detections: Sequence[dict[str, Any]], boxes: Sequence[tuple[tuple[float, ...], frozenset[str]]]
) -> bool:
    """Whether the model disagrees with a checked image's boxes ``(xyxy, allowed classes)``: a
    detection (at its operating threshold) matching no box at IoU ≥ 0.5, a box no detection matches,
    or a match named outside the box's classes (``unknown`` included; a box without class takes any
    name)."""
    # torch (box_iou): a server on an export, which predicts without it, loads it for this filter only
    from quickstudy.evaluate.matching import match_detections

    found = np.array([d["box"] for d in detections], dtype=np.float64).reshape(-1, 4)
    scores = np.array([d["score"] for d in detections], dtype=np.float64)
    truth = np.array([xyxy for xyxy, _ in boxes], dtype=np.float64).reshape(-1, 4)
    matched = match_detections(found, scores, truth)
    if (matched < 0).any() or len(set(matched.tolist())) < len(boxes):
        return True
    return any(
        boxes[t][1] and detections[d]["class"] not in boxes[t][1] for d, t in enumerate(matched.tolist())
    )


class PredictionCache:
    """The cache file of one store; each method opens its own connection (threads share nothing)."""

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self.path = cache_path(self.store)
        with self.connect() as conn:
            conn.executescript(_SCHEMA)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection to the cache with the store attached read-only as ``s``."""
        try:
            # URIs on this connection, so that the store is attached read-only wherever SQLite was built
            conn = sqlite3.connect(_uri(self.path), timeout=30, isolation_level=None, uri=True)
        except sqlite3.DatabaseError as error:
            raise QuickstudyError(f"{self.path}: cannot open the prediction cache: {error}") from None
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("ATTACH DATABASE ? AS s", (_uri(self.store) + "?mode=ro",))
            yield conn
        except sqlite3.DatabaseError as error:
            raise QuickstudyError(f"{self.path}: the prediction cache failed: {error}") from None
        finally:
            conn.close()

    # -- filling -----------------------------------------------------------------------------------

    def missing(self, model: str) -> list[tuple[int, str]]:
        """The images without a prediction of ``model``: (id, path)."""
        with self.connect() as conn:
            todo = conn.execute(
                "SELECT i.id, i.path FROM s.images i WHERE NOT EXISTS "
                "(SELECT 1 FROM predictions p WHERE p.model = ? AND p.image_id = i.id) ORDER BY i.id",
                (model,),
            ).fetchall()
        return [(int(i), str(p)) for i, p in todo]

    def count(self, model: str) -> tuple[int, int]:
        """``(images with a prediction of ``model``, images in the store)``."""
        with self.connect() as conn:
            done = conn.execute(
                "SELECT COUNT(*) FROM predictions p JOIN s.images i ON i.id = p.image_id WHERE p.model = ?",
                (model,),
            ).fetchone()[0]
            total = conn.execute("SELECT COUNT(*) FROM s.images").fetchone()[0]
        return int(done), int(total)

    def put(
        self,
        model: str,
        image_id: int,
        detections: Sequence[dict[str, Any]],
        embeddings: dict[int, np.ndarray] | None = None,
        error: str | None = None,
    ) -> None:
        unknowns = sum(d["class"] == UNKNOWN for d in detections)
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT OR REPLACE INTO predictions VALUES (?, ?, ?, ?, ?)",
                (model, image_id, json.dumps(list(detections)), unknowns, error),
            )
            conn.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                [
                    (model, image_id, k, np.asarray(v, dtype=np.float32).tobytes())
                    for k, v in (embeddings or {}).items()
                ],
            )
            conn.execute("COMMIT")

    # -- reading -----------------------------------------------------------------------------------

    def detections(self, model: str, image_id: int) -> list[dict[str, Any]] | None:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT detections FROM predictions WHERE model = ? AND image_id = ?", (model, image_id)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def unknowns(self, model: str) -> list[tuple[int, int, dict[str, Any], np.ndarray]]:
        """Every cached ``unknown`` detection of ``model``: (image id, index, detection, embedding)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT p.image_id, p.detections, e.detection, e.vector FROM predictions p "
                "JOIN embeddings e ON e.model = p.model AND e.image_id = p.image_id "
                "WHERE p.model = ? AND p.unknowns > 0 ORDER BY p.image_id, e.detection",
                (model,),
            ).fetchall()
        return [
            (int(image_id), int(k), json.loads(found)[k], np.frombuffer(vector, dtype=np.float32))
            for image_id, found, k, vector in rows
        ]

    def judge(self, model: str, store: Store) -> None:
        """Write the verdict of every checked, predicted image that has none for its current version
        and the current taxonomy (:func:`disagrees`)."""
        taxonomy_version = store.taxonomy_version()
        resolution = store.taxonomy.resolution()
        with self.connect() as conn:
            stale = conn.execute(
                "SELECT i.id, i.version, p.detections FROM s.images i "
                "JOIN predictions p ON p.model = ? AND p.image_id = i.id "
                "LEFT JOIN verdicts v ON v.model = p.model AND v.image_id = i.id "
                "WHERE i.checked = 1 AND p.error IS NULL AND (v.image_id IS NULL "
                "OR v.image_version != i.version OR v.taxonomy_version != ?)",
                (model, taxonomy_version),
            ).fetchall()
            if not stale:
                return
            boxes: dict[int, list[tuple[tuple[float, ...], frozenset[str]]]] = {i: [] for i, _, _ in stale}
            for start in range(0, len(stale), 500):
                ids = [i for i, _, _ in stale[start : start + 500]]
                for image_id, *xyxy, class_id in conn.execute(
                    "SELECT image_id, x1, y1, x2, y2, class_id FROM s.boxes "
                    f"WHERE image_id IN ({','.join('?' * len(ids))}) ORDER BY id",
                    ids,
                ):
                    allowed = frozenset() if class_id is None else resolution.get(class_id, frozenset())
                    boxes[image_id].append((tuple(xyxy), allowed))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
                [
                    (model, i, version, taxonomy_version, int(disagrees(json.loads(found), boxes[i])))
                    for i, version, found in stale
                ],
            )
            conn.execute("COMMIT")


class CacheFiller:
    """The background thread that fills the cache for the model the server predicts with."""

    def __init__(self, cache: PredictionCache, model: CurrentModel, idle_seconds: float = 2.0) -> None:
        self.cache = cache
        self.model = model
        self.idle_seconds = idle_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._progress: dict[str, Any] = {"state": "stopped", "model_version": None}

    def status(self) -> dict[str, Any]:
        """How far the cache holds the current model's predictions (``GET /api/cache``)."""
        key = self.model.identity()
        done, total = self.cache.count(key)
        with self._lock:
            state, error = self._progress["state"], self._progress.get("error")
        running = self._thread is not None and self._thread.is_alive()
        if state != "failed":
            state = "ready" if done >= total else "filling" if running else "stopped"
        return {
            "state": state,
            "model_version": self.model.version(),
            "done": done,
            "total": total,
            "error": error,
        }

    def _report(self, **values: Any) -> None:
        with self._lock:
            self._progress.update(values)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="prediction-cache", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.fill()
            except QuickstudyError as failure:  # e.g. a model folder without a version yet
                self._report(state="failed", error=str(failure))
                busy = False
            except Exception as failure:  # the server keeps serving; the next round tries again
                log.exception("prediction cache")
                self._report(state="failed", error=f"{type(failure).__name__}: {failure}")
                busy = False
            if not busy:
                self._stop.wait(self.idle_seconds)

    def fill(self, limit: int | None = None) -> bool:
        """Predict up to ``limit`` images (all) the current model has no cached prediction for;
        returns whether there were any. Stops early when the model changes or the server stops."""
        version, predictor = self.model.get()
        key = self.model.identity()
        todo = self.cache.missing(key)
        self._report(state="filling" if todo else "ready", model_version=version, error=None)
        todo = todo[:limit] if limit is not None else todo
        for start in range(0, len(todo), BATCH):
            if self._stop.is_set() or self.model.identity() != key:
                return True
            for image_id, found, embeddings, error in self._predict(predictor, todo[start : start + BATCH]):
                self.cache.put(key, image_id, found, embeddings, error)
        return bool(todo)

    def _predict(
        self, predictor: Any, images: list[tuple[int, str]]
    ) -> list[tuple[int, list[dict[str, Any]], dict[int, np.ndarray], str | None]]:
        """Per image: its detections, the embeddings of its unknowns (a model folder only) and an error."""
        paths = [path for _, path in images]
        try:
            if self.model.kind == MODEL:
                # its own wrapper of the same network: requests read the notes of the shared one
                named = type(predictor)(predictor.model).predict_embedded(paths)
            else:
                named = [[(d, None) for d in found] for found in predictor.predict(paths)]
        except Exception as failure:
            if len(images) == 1:  # one image the model cannot read: kept with its reason, not retried
                return [(images[0][0], [], {}, f"{type(failure).__name__}: {failure}")]
            return [row for image in images for row in self._predict(predictor, [image])]
        result: list[tuple[int, list[dict[str, Any]], dict[int, np.ndarray], str | None]] = []
        for (image_id, _), found in zip(images, named, strict=True):
            detections = [
                {
                    "box": [round(float(v), 2) for v in d.box],
                    "class": d.class_name,
                    "score": round(d.score, 4),
                }
                for d, _ in found
            ]
            embeddings = {
                k: vector.numpy()
                for k, (d, vector) in enumerate(found)
                if d.class_name == UNKNOWN and vector is not None
            }
            result.append((image_id, detections, embeddings, None))
        return result
