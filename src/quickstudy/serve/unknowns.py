"""Unknown groups: the detections the model calls ``unknown`` across the cached images, grouped by
the similarity of their embeddings, so that a person names a whole group at once.

Average-link agglomerative clustering on cosine distance, cut at ``1 - similarity``: every two
groups left apart have an average similarity below ``similarity``. Deterministic (SciPy's linkage
on the detections in image order). A detection already covered by a stored box with a class
(IoU ≥ 0.5) is left out: someone has named it. Each group has a key made from the model and its
members, so a request to name it refers to exactly the boxes the person saw.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from torchvision.ops import box_iou

from quickstudy.evaluate.matching import MATCH_IOU
from quickstudy.labels.store import Store
from quickstudy.serve.cache import PredictionCache

# the most unknown detections grouped at once (the highest-scoring): linkage is quadratic in memory
MAX_GROUPED = 3000


def unknown_groups(
    cache: PredictionCache, model: str, store: Store, similarity: float
) -> tuple[list[dict[str, Any]], int]:
    """``(groups, unknown detections found)``: groups largest first, members by score, each member
    ``{"image", "name", "detection", "box", "score"}``."""
    found = cache.unknowns(model)
    named = _named_boxes(store, sorted({image_id for image_id, *_ in found}))
    members = [
        (image_id, k, detection, vector)
        for image_id, k, detection, vector in found
        if not _covered(detection["box"], named.get(image_id, []))
    ]
    total = len(members)
    if len(members) > MAX_GROUPED:
        members = sorted(members, key=lambda m: (-m[2]["score"], m[0], m[1]))[:MAX_GROUPED]
        members.sort(key=lambda m: (m[0], m[1]))
    if not members:
        return [], total
    if len(members) == 1:
        labels = np.array([1])
    else:
        vectors = np.stack([m[3] for m in members]).astype(np.float64)
        tree = linkage(vectors, method="average", metric="cosine")
        labels = fcluster(tree, t=1.0 - similarity, criterion="distance")
    ids = sorted({m[0] for m in members})
    names = {
        row["id"]: Path(row["path"]).name
        for row in store.query(f"SELECT id, path FROM images WHERE id IN ({','.join('?' * len(ids))})", ids)
    }
    clusters: dict[int, list[int]] = defaultdict(list)
    for position, cluster in enumerate(labels.tolist()):
        clusters[cluster].append(position)
    groups: list[dict[str, Any]] = []
    for positions in clusters.values():
        chosen = [members[p] for p in positions]
        vectors = np.stack([m[3] for m in chosen]).astype(np.float64)
        centre = vectors.mean(0)
        centre /= max(np.linalg.norm(centre), 1e-12)
        rows: list[dict[str, Any]] = sorted(
            (
                {
                    "image": image_id,
                    "name": names.get(image_id, ""),
                    "detection": k,
                    "box": detection["box"],
                    "score": detection["score"],
                }
                for image_id, k, detection, _ in chosen
            ),
            key=lambda r: (-r["score"], r["image"], r["detection"]),
        )
        identity = ";".join(
            f"{r['image']}:{r['detection']}" for r in sorted(rows, key=lambda r: (r["image"], r["detection"]))
        )
        groups.append(
            {
                "key": hashlib.sha256(f"{model}|{identity}".encode()).hexdigest()[:16],
                "size": len(rows),
                "images": len({r["image"] for r in rows}),
                "cohesion": round(float((vectors @ centre).mean()), 4),
                "members": rows,
            }
        )
    groups.sort(key=lambda g: (-g["size"], g["members"][0]["image"], g["members"][0]["detection"]))
    return groups, total


def _named_boxes(store: Store, image_ids: list[int]) -> dict[int, list[tuple[float, float, float, float]]]:
    """The stored boxes with a class of each image."""
    result: dict[int, list[tuple[float, float, float, float]]] = {i: [] for i in image_ids}
    for start in range(0, len(image_ids), 500):
        ids = image_ids[start : start + 500]
        for row in store.query(
            "SELECT image_id, x1, y1, x2, y2 FROM boxes WHERE class_id IS NOT NULL "
            f"AND image_id IN ({','.join('?' * len(ids))})",
            ids,
        ):
            result[row["image_id"]].append((row["x1"], row["y1"], row["x2"], row["y2"]))
    return result


def _covered(box: list[float], named: list[tuple[float, float, float, float]]) -> bool:
    if not named:
        return False
    overlaps = box_iou(torch.tensor([box], dtype=torch.float64), torch.tensor(named, dtype=torch.float64))
    return bool((overlaps >= MATCH_IOU).any())


def name_group(store: Store, group: dict[str, Any], class_name: str, author: str) -> dict[str, Any]:
    """Make each member of ``group`` a stored box of ``class_name`` (added to the taxonomy when new),
    in one transaction of journaled box edits by ``author``: a box without class that the member
    overlaps at IoU ≥ 0.5 is given the class, otherwise a new box is drawn. Returns what was done."""
    added, labelled = [], []
    with store.transaction():
        created = class_name not in store.classes()
        if created:
            store.taxonomy.add(class_name, author=author)
        for member in group["members"]:
            state = store.image(member["image"])
            width, height = state.image.width, state.image.height
            x1, y1, x2, y2 = member["box"]
            box = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
            unclassed = [s.record for s in state.boxes if not s.allowed]
            if unclassed:
                overlaps = box_iou(
                    torch.tensor([box], dtype=torch.float64),
                    torch.tensor([b.xyxy for b in unclassed], dtype=torch.float64),
                )[0]
                best = int(overlaps.argmax())
                if overlaps[best] >= MATCH_IOU:
                    store.update_box(unclassed[best].box_id, label=class_name, author=author)
                    labelled.append(unclassed[best].box_id)
                    continue
            added.append(store.add_box(member["image"], box, class_name, author=author))
    return {"class": class_name, "class_created": created, "added": added, "labelled": labelled}
