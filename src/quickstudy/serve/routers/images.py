"""Images of the store: a filtered, paged list; one image with its boxes and version; its bytes;
uploads; marking an image checked (its boxes complete; with none, no defect) or back to no labels yet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Query, status
from fastapi.responses import FileResponse

from quickstudy.labels.records import ImageState, ImportedImage, ShownBox
from quickstudy.serve.dependencies import Author, Filler, Model, Settings, Upload
from quickstudy.serve.schemas import CheckedMark, ImageDetail, ImageEdited, ImageList, StaleImage, label
from quickstudy.serve.uploads import keep_image

router = APIRouter(prefix="/images", tags=["images"])

UNTAGGED = "untagged"
SplitName = Literal["train", "val", "test"]
# what an edit answers when it was made on an older version of the image
STALE: dict[int | str, dict[str, Any]] = {
    status.HTTP_409_CONFLICT: {"model": StaleImage, "description": "the image changed since that version"}
}


@router.get("", response_model=ImageList)
def list_images(
    settings: Settings,
    model: Model,
    filler: Filler,
    split: Annotated[SplitName | Literal["untagged"] | None, Query(description="only this split")] = None,
    class_name: Annotated[
        str | None, Query(alias="class", description="only images holding a box that may be of this class")
    ] = None,
    checked: Annotated[
        bool | None,
        Query(description="true: only checked images (their boxes complete); false: only those not checked"),
    ] = None,
    no_labels: Annotated[
        bool, Query(description="only images with no labels yet: not checked and without boxes")
    ] = False,
    unknown: Annotated[
        bool, Query(description="only images where the current model reports an 'unknown' detection")
    ] = False,
    disagrees: Annotated[
        bool,
        Query(
            description="only checked images where the model disagrees with the boxes: a detection "
            "matching no box at IoU 0.5, a box no detection matches, or one named otherwise"
        ),
    ] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Images in the store's order, ``limit`` from ``offset`` (paged in SQL), with the number of
    their boxes. The filters on predictions read the prediction cache of the current model: an
    image it has not predicted yet passes neither (``predictions`` says how far it is)."""
    where: list[str] = []
    params: list[Any] = []
    if split == UNTAGGED:
        where.append("i.split IS NULL")
    elif split is not None:
        where.append("i.split = ?")
        params.append(split)
    if checked is not None:
        where.append("i.checked = ?")
        params.append(int(checked))
    if no_labels:
        where.append("i.checked = 0 AND NOT EXISTS (SELECT 1 FROM s.boxes b WHERE b.image_id = i.id)")
    key = model.identity() if unknown or disagrees else None
    with settings.open_store() as store:
        if class_name is not None:
            ids = [i for i, names in store.taxonomy.resolution().items() if class_name in names]
            where.append(
                f"EXISTS (SELECT 1 FROM s.boxes b WHERE b.image_id = i.id AND b.class_id IN ({','.join('?' * len(ids))}))"
            )
            params.extend(ids)
        if unknown:
            where.append(
                "EXISTS (SELECT 1 FROM predictions p WHERE p.model = ? AND p.image_id = i.id AND p.unknowns > 0)"
            )
            params.append(key)
        if disagrees:
            assert key is not None
            filler.cache.judge(key, store)
            where.append(
                "i.checked = 1 AND EXISTS (SELECT 1 FROM verdicts v WHERE v.model = ? AND v.image_id = i.id "
                "AND v.disagrees = 1 AND v.image_version = i.version AND v.taxonomy_version = ?)"
            )
            params.extend([key, store.taxonomy_version()])
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    with filler.cache.connect() as conn:
        total = conn.execute(f"SELECT COUNT(*) FROM s.images i{condition}", params).fetchone()[0]
        rows = conn.execute(
            "SELECT i.id, i.path, i.width, i.height, i.split, i.checked, "
            "(SELECT COUNT(*) FROM s.boxes b WHERE b.image_id = i.id) "
            f"FROM s.images i{condition} ORDER BY i.id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "images": [
            {
                "id": image_id,
                "name": Path(path).name,
                "width": width,
                "height": height,
                "split": image_split,
                "checked": bool(is_checked),
                "boxes": boxes,
            }
            for image_id, path, width, height, image_split, is_checked, boxes in rows
        ],
        "predictions": filler.status() if key is not None else None,
    }


def shown_box(shown: ShownBox) -> dict[str, Any]:
    box = shown.record
    return {
        "id": box.box_id,
        "box": box.xyxy,
        "class": label(shown.allowed),
        "author": box.author,
        "created": box.created,
    }


def image_detail(state: ImageState) -> dict[str, Any]:
    """An image with its version, status and boxes, as the API writes it."""
    image = state.image
    return {
        "id": image.image_id,
        "name": image.path.name,
        "width": image.width,
        "height": image.height,
        "split": image.split,
        "checked": image.checked,
        "version": image.version,
        "boxes": [shown_box(shown) for shown in state.boxes],
    }


@router.get("/{image_id}", response_model=ImageDetail)
def get_image(image_id: int, settings: Settings) -> dict[str, Any]:
    """One image with its boxes, what each box's class means now, and its version."""
    with settings.open_store() as store:
        return image_detail(store.image(image_id))


@router.post("/{image_id}/checked", response_model=ImageEdited, responses=STALE)
def mark_checked(image_id: int, body: CheckedMark, settings: Settings, author: Author) -> dict[str, Any]:
    """Mark the image checked (its boxes are complete; with none, it is a defect-free part, a
    negative for training) or, with ``checked: false``, back to no labels yet. Refused with 409 and
    the image as it is now when ``version`` is not its current version."""
    with settings.open_store() as store, store.transaction():
        store.set_checked([image_id], body.checked, author=author, expected_version=body.version)
        return {"image": image_detail(store.image(image_id)), "edit": store.last_edit()}


@router.get("/{image_id}/file", response_class=FileResponse)
def image_file(image_id: int, settings: Settings) -> FileResponse:
    """The image's bytes as stored."""
    with settings.open_store() as store:
        path = store.image(image_id).image.path
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
                [
                    ImportedImage(
                        path,
                        image.width,
                        image.height,
                        split=split,
                        checked=False,  # nobody has looked at it yet
                        source=f"upload {image.name}",
                    )
                ],
                source="upload",
                author=author,
            )
            image_id = store.query("SELECT id FROM images WHERE path = ?", (str(path),))[0]["id"]
        return image_detail(store.image(image_id))
