"""Multi-task learning: loss weighting, gradient combiners, shared / conditioned / expert architectures.

Shaped like LibMTL: a :class:`~quickstudy.multitask.weighting.Weighting` turns a list of task losses
into gradients (it calls ``backward`` itself), so any architecture trains with any weighting or
combiner through :class:`quickstudy.train.Trainer` by passing the weighting's ``backward``.
"""
