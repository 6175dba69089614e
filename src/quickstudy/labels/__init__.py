"""The label model: boxes and classes are separate facts (imports no torch).

A box says "a defect is here"; a class label, optional, says "of type c" in the taxonomy version it
was written in. Class definitions change (add, rename, merge, split, retire) and no box is lost.

>>> from quickstudy.labels import Store
>>> from quickstudy.labels.known import import_neu_det
>>> store = Store.open("neu.qs")  # doctest: +SKIP
>>> import_neu_det(store, "../shared/data/neu-det")  # doctest: +SKIP
"""

from quickstudy.labels.records import BoxRecord, ImageRecord, ImportedBox, ImportedImage, LabelledBox, Sample
from quickstudy.labels.store import ImportReport, Store
from quickstudy.labels.taxonomy import Taxonomy

__all__ = [
    "BoxRecord",
    "ImageRecord",
    "ImportReport",
    "ImportedBox",
    "ImportedImage",
    "LabelledBox",
    "Sample",
    "Store",
    "Taxonomy",
]
