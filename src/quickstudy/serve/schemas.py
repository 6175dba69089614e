"""The JSON the API takes and gives (the OpenAPI schema at ``/docs`` is made from these).

A box's class is a name, ``null`` (no class), or a sorted list of names: a partial label, such as
an old ``line`` box after ``split line -> inclusion, scratches`` (``["inclusion", "scratches"]``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Label = str | list[str] | None


class RequestBody(BaseModel):
    # a misspelt field (``dryrun``) is refused rather than ignored
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


MODEL_KIND = "'model': a model folder; 'export': an ONNX export folder, which predicts only"
DISABLED = "the features this kind of model leaves off (refused with 409)"


class Health(BaseModel):
    status: str
    quickstudy: str
    model_version: int
    taxonomy_version: int
    kind: str = Field(description=MODEL_KIND)
    disabled: list[str] = Field(description=DISABLED)


class DetectionOut(BaseModel):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the image's own pixels")
    class_name: str = Field(alias="class", description="a class name, or 'unknown'")
    score: float


class Prediction(BaseModel):
    detections: list[DetectionOut]
    model_version: int


class BoxOut(BaseModel):
    id: int
    box: tuple[float, float, float, float]
    class_name: Label = Field(alias="class")
    author: str
    created: str


class ImageSummary(BaseModel):
    id: int
    name: str
    width: int
    height: int
    split: str | None
    checked: bool = Field(description="its boxes are complete (with none: defect-free); false: no labels yet")
    boxes: int


class CacheProgress(BaseModel):
    state: str = Field(description="filling, ready, stopped (not started) or failed")
    model_version: int | None = Field(description="the version whose predictions are cached")
    done: int = Field(description="images with a cached prediction of that version")
    total: int = Field(description="images in the store")
    error: str | None = None


class ImageList(BaseModel):
    total: int = Field(description="images that pass the filters, over all pages")
    limit: int
    offset: int
    images: list[ImageSummary]
    predictions: CacheProgress | None = Field(
        None, description="with a filter on the model's predictions: how far the cache is filled"
    )


class ImageDetail(BaseModel):
    id: int
    name: str
    width: int
    height: int
    split: str | None
    checked: bool = Field(description="its boxes are complete (with none: defect-free); false: no labels yet")
    version: int = Field(description="raised by every change to its boxes or status; send it with an edit")
    boxes: list[BoxOut]


class StaleImage(BaseModel):
    """The answer to an edit made on an older version of the image (409): nothing was written."""

    detail: str
    image: ImageDetail = Field(description="the image as it is now: redraw it, then edit again")


class ImageEdit(RequestBody):
    version: int = Field(
        ge=0, description="the image's version the edit was made on (from GET /api/images/{id})"
    )


class NewBox(ImageEdit):
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the image's own pixels")
    class_name: Label = Field(None, alias="class", description="a class, a list of classes, or null for none")


class BoxPatch(ImageEdit):
    box: tuple[float, float, float, float] | None = Field(None, description="where the box is now, if moved")
    class_name: Label = Field(
        None,
        alias="class",
        description="give it to relabel: a class, a list of classes (one of them), or null for no class",
    )

    @model_validator(mode="after")
    def changes_something(self) -> BoxPatch:
        if self.box is None and "class_name" not in self.model_fields_set:
            raise ValueError("give 'box', 'class' or both")
        return self


class CheckedMark(ImageEdit):
    checked: bool = Field(
        True,
        description="true: its boxes are complete (with none: checked, no defect); false: back to no labels yet",
    )


class ClassOut(BaseModel):
    name: str
    boxes: int = Field(description="boxes labelled exactly this class")


class Classes(BaseModel):
    taxonomy_version: int
    classes: list[ClassOut]
    partial_label_sets: dict[str, int] = Field(description="'a | b' -> boxes that mean one of them")


class Edit(BaseModel):
    id: int
    kind: str
    payload: dict[str, Any]
    author: str
    time: str
    undone: bool


class ImageEdited(BaseModel):
    image: ImageDetail = Field(description="the image after the edit, with its new version")
    edit: Edit = Field(description="the journal entry written (give its id to undo it)")


class BoxEdited(ImageEdited):
    box: BoxOut = Field(description="the box after the edit (as it was, for a delete)")


class BoxChange(BaseModel):
    boxes: int
    before: Label
    after: Label
    unnamed: bool = Field(
        description="after the change, the boxes are of a type no class names (their class retired "
        "as unnamed): never to be named as another class in training"
    )


class TaxonomyChange(BaseModel):
    dry_run: bool
    edit: Edit | None = Field(
        description="the journal entry written (the one undone, for undo); none for a dry run"
    )
    taxonomy_version: int = Field(description="after the change (unchanged by a dry run)")
    changes: list[BoxChange] = Field(description="what the change does to the meaning of boxes")
    summary: list[str] = Field(description="the changes in words")


class DryRun(RequestBody):
    dry_run: bool = Field(False, description="say what the change would do to boxes, change nothing")


class AddClass(DryRun):
    name: str


class RenameClass(DryRun):
    old: str
    new: str


class MergeClasses(DryRun):
    sources: list[str] = Field(min_length=2)
    target: str = Field(description="the merged class; may reuse a source's name")


class SplitClass(DryRun):
    source: str
    targets: list[str] = Field(min_length=2)


class RetireClass(DryRun):
    name: str
    meaning: Literal["unnamed", "other-types"] = Field(
        "unnamed",
        description="what the retired class's boxes are: unnamed, a type no class names (yet), never "
        "to be named as another class in training; other-types, of the other current classes, which "
        "training may pseudo-label them as. Retiring a retired class changes only this",
    )


class Undo(DryRun):
    edit: int | None = Field(
        None,
        description="the id of the edit meant to be undone (from the history); refused with 409 "
        "when another edit is the latest by then",
    )


class LearnRequest(RequestBody):
    class_name: str = Field(alias="class", description="the class to learn; its boxes must be marked")
    images: list[int] | None = Field(
        None,
        min_length=1,
        description="ids of images holding marked boxes of the class; none: every TRAIN image with one",
    )
    adapt: bool = Field(False, description="tune the new prototype on its support boxes")
    adapt_localizer: bool | None = Field(
        None,
        description="also teach the learned types' localization head the support boxes (default: when "
        "the base head proposes under half of them)",
    )
    adapt_recognizer: bool | None = Field(
        None,
        description="also tune the recognition head on the support boxes, known boxes replayed and held "
        "to their embeddings (for a type that looks like a known one); null (the default): only where "
        "held-out support images say it helps, or where one support image leaves none to hold out",
    )


class JobOut(BaseModel):
    id: int
    kind: str
    author: str
    request: dict[str, Any]
    state: str = Field(description="queued, running, done or failed")
    phase: str | None = Field(
        description="the step the job is in (or ended in); a learn job's: support, localizer, "
        "recognizer, transductive, threshold, exports, before, after; a suggest job's: rank"
    )
    progress: float = Field(
        description="share of the job's work done, 0 to 1, by the rough weight of its steps"
    )
    seconds: float | None
    result: dict[str, Any] | None
    error: str | None
    created: str


class VersionOut(BaseModel):
    version: int
    current: bool
    classes: list[str]
    note: str
    taxonomy_version: int | None
    created: str
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="image_size (long side), channels, tiling: how the network sees images",
    )


class Models(BaseModel):
    current: int
    versions: list[VersionOut]
    kind: str = Field(description=MODEL_KIND)
    disabled: list[str] = Field(description=DISABLED)


class UseVersion(RequestBody):
    version: int = Field(ge=1)


def label(allowed: frozenset[str]) -> Label:
    """A box's allowed set of current classes as the API writes it."""
    if not allowed:
        return None
    if len(allowed) == 1:
        return next(iter(allowed))
    return sorted(allowed)


class GroupMember(BaseModel):
    image: int
    name: str = Field(description="the image's file name")
    detection: int = Field(description="the detection's index in the image's cached predictions")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in the image's own pixels")
    score: float


class UnknownGroup(BaseModel):
    key: str = Field(description="names exactly these members: give it to name the group")
    size: int
    images: int
    cohesion: float = Field(description="mean cosine similarity of the members to their mean")
    members: list[GroupMember]


class UnknownGroups(BaseModel):
    model_version: int
    similarity: float
    unknowns: int = Field(description="unknown detections not yet covered by a box with a class")
    grouped: int = Field(description="of them grouped (the highest-scoring, when there are very many)")
    cache: CacheProgress
    groups: list[UnknownGroup]


class SuggestRequest(RequestBody):
    class_name: str | None = Field(
        None,
        alias="class",
        min_length=1,
        description="rank by this class's detections (a class the model knows); none: by the most "
        "likely defect no known type explains",
    )
    n: int = Field(20, ge=1, le=500, description="how many of the ranked images the result lists")


class NameGroup(RequestBody):
    class_name: str = Field(alias="class", min_length=1, description="a class of the store, or a new one")
    similarity: float = Field(0.8, gt=0, le=1, description="the similarity the group was listed with")


class GroupNamed(BaseModel):
    class_name: str = Field(alias="class")
    class_created: bool
    added: list[int] = Field(description="ids of the boxes drawn")
    labelled: list[int] = Field(description="ids of boxes without class that were given the class")
    edit: Edit = Field(description="the last journal entry written")
