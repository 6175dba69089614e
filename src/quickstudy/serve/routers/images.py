"""Images of the store: a filtered, paged list; one image with its boxes; its bytes; uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Query, status
from fastapi.responses import FileResponse

from quickstudy.labels.records import ImportedImage
from quickstudy.labels.store import SPLITS, Store
from quickstudy.serve.dependencies import Author, Settings, Upload
from quickstudy.serve.schemas import ImageDetail, ImageList, label
from quickstudy.serve.uploads import keep_image

router = APIRouter(prefix="/images", tags=["images"])

UNTAGGED = "untagged"
SplitName = Literal["train", "val", "test"]


@router.get("", response_model=ImageList)
def list_images(
    settings: Settings,
    split: Annotated[SplitName | Literal["untagged"] | None, Query(description="only this split")] = None,
    class_name: Annotated[
        str | None, Query(alias="class", description="only images holding a box that may be of this class")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Images in the store's order, ``limit`` from ``offset``, with the number of their boxes."""
    with settings.open_store() as store:
        samples = store.samples(split if split in SPLITS else None)
    if split == UNTAGGED:
        samples = [s for s in samples if s.split is None]
    if class_name is not None:
        samples = [s for s in samples if any(class_name in box.allowed for box in s.boxes)]
    return {
        "total": len(samples),
        "limit": limit,
        "offset": offset,
        "images": [
            {
                "id": s.image_id,
                "name": s.path.name,
                "width": s.width,
                "height": s.height,
                "split": s.split,
                "boxes": len(s.boxes),
            }
            for s in samples[offset : offset + limit]
        ],
    }


def _image_row(store: Store, image_id: int) -> Any:
    rows = store.query("SELECT id, path, width, height, split FROM images WHERE id = ?", (image_id,))
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no image {image_id} in the store")
    return rows[0]


def _image_detail(store: Store, image_id: int) -> dict[str, Any]:
    image = _image_row(store, image_id)
    resolution = store.taxonomy.resolution()
    boxes = store.query(
        "SELECT id, x1, y1, x2, y2, class_id, author, created FROM boxes WHERE image_id = ? ORDER BY id",
        (image_id,),
    )
    return {
        "id": image["id"],
        "name": Path(image["path"]).name,
        "width": image["width"],
        "height": image["height"],
        "split": image["split"],
        "boxes": [
            {
                "id": box["id"],
                "box": (box["x1"], box["y1"], box["x2"], box["y2"]),
                "class": label(frozenset() if box["class_id"] is None else resolution[box["class_id"]]),
                "author": box["author"],
                "created": box["created"],
            }
            for box in boxes
        ],
    }


@router.get("/{image_id}", response_model=ImageDetail)
def get_image(image_id: int, settings: Settings) -> dict[str, Any]:
    """One image with its boxes and what each box's class means now."""
    with settings.open_store() as store:
        return _image_detail(store, image_id)


@router.get("/{image_id}/file", response_class=FileResponse)
def image_file(image_id: int, settings: Settings) -> FileResponse:
    """The image's bytes as stored."""
    with settings.open_store() as store:
        path = Path(_image_row(store, image_id)["path"])
    if not path.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"image {image_id}: its file is missing on the server")
    return FileResponse(path)


@router.post("", response_model=ImageDetail, status_code=status.HTTP_201_CREATED)
def upload_image(
    image: Upload,
    settings: Settings,
    author: Author,
    split: Annotated[SplitName | None, Form(description="tag the image with this split")] = None,
) -> dict[str, Any]:
    """Keep the image beside the store, named by its SHA-256, and import it without boxes."""
    path = keep_image(image, settings.uploads)
    with settings.open_store() as store:
        with store.transaction():  # the check and the import, under one write lock
            found = store.query("SELECT id FROM images WHERE path = ?", (str(path),))
            if found:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, f"{image.name}: already in the store as image {found[0]['id']}"
                )
            store.import_images(
                [ImportedImage(path, image.width, image.height, split=split, source=f"upload {image.name}")],
                source="upload",
                author=author,
            )
            image_id = store.query("SELECT id FROM images WHERE path = ?", (str(path),))[0]["id"]
        return _image_detail(store, image_id)
