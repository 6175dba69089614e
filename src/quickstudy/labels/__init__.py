"""The label model: boxes and classes are separate facts (imports no torch).

A box says "a defect is here"; a class label, optional, says "of type c" in the taxonomy version it
was written in. Class definitions change (add, rename, merge, split, retire) and no box is lost.

A label also rules classes out. A box whose label resolves to a set S (after a split, several
classes) is none of the classes outside S. Retiring a class says what its boxes are: ``unnamed``
(the default), a type no class names (yet), so they are never to be named as another class and
stand as examples of what must come out ``unknown`` (:attr:`LabelledBox.unnamed`); or
``other-types``: of the other current classes (training may pseudo-label them).

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
