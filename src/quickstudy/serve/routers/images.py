"""Images of the store: a filtered, paged list; one image with its boxes and version; its bytes;
uploads; marking an image checked (its boxes complete; with none, no defect) or back to no labels yet."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, HTTPException, Query, status
from fastapi.responses import FileResponse

from quickstudy.labels.records import ImageState, ImportedImage, ShownBox
from quickstudy.labels.store import SPLITS
from quickstudy.serve.dependencies import Author, Settings, Upload
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
    split: Annotated[SplitName | Literal["untagged"] | None, Query(description="only this split")] = None,
    class_name: Annotated[
        str | None, Query(alias="class", description="only images holding a box that may be of this class")
    ] = None,
    checked: Annotated[
        bool | None,
        Query(
            description="false: only images with no labels yet (nobody has looked); true: only checked ones"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Images in the store's order, ``limit`` from ``offset``, with the number of their boxes."""
    with settings.open_store() as store:
        samples = store.samples(split if split in SPLITS else None)
    if split == UNTAGGED:
        samples = [s for s in samples if s.split is None]
    if checked is not None:
        samples = [s for s in samples if s.checked == checked]
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
                "checked": s.checked,
                "boxes": len(s.boxes),
            }
            for s in samples[offset : offset + limit]
        ],
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
