"""What runs a trained detector outside training: ONNX export and the onnxruntime predictor.

An export folder holds the detector's network as two ONNX graphs and its class memory beside them as
plain data::

    OUT/dense.onnx    images [B, C, S, S] in [0, 1] → defect scores, decoded boxes and the FPN maps
    OUT/embed.onnx    one image's FPN maps, its proposal boxes and the prototypes → embeddings,
                      cosine similarities and p(class | box)
    OUT/memory.npz    the prototypes [C, D]
    OUT/memory.json   class names, thresholds, input geometry, proposal settings, the source model's
                      version and taxonomy version, the hashes of the network it belongs to

:mod:`quickstudy.deploy.runtime` (onnxruntime, numpy and Pillow; no torch) predicts with it;
:mod:`quickstudy.deploy.export` (torch) writes it and rewrites the class memory of a model's exports
when ``learn`` or ``models use`` changes the model (:func:`~quickstudy.deploy.export.refresh_exports`).
This module imports neither, so that importing the package costs nothing.
"""
