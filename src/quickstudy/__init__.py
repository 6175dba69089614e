"""quickstudy: learn new visual defect types from a handful of examples.

The package is three layers (see DESIGN.md): the label model (:mod:`quickstudy.labels`), the
learning libraries (:mod:`quickstudy.meta`, :mod:`quickstudy.multitask`) and the multi-task
few-shot detector (:mod:`quickstudy.detect`) built from them.
"""

__version__ = "0.1.0"
