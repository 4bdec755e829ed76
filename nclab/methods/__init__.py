"""The source methods, one small module each, plugged into the one loop (``nclab.train.fit``).

A method brings what differs from plain cross-entropy training, and nothing else: a model builder, a loss,
hooks (the contract of ``nclab.train.contract``, re-exported here: :class:`Method`, :class:`Hook`,
:class:`EpochMeans`, :data:`ERM`). Each module has the same recipe shape: ``SCALES`` (one
``nclab.train.Scale`` per profile), ``recipe(profile=None, method=None, *, dataset=…, **overrides)`` and
``load_or_train(method, train_set, test_set=None, **options)``.

- ``control``: layer-wise NC control, the entropy regulariser and the fixed ETF projector (seed 000);
- ``invariance``: ERM on the digits, IRMv1 and V-REx (the baselines of seed 001);
- ``ncfal``: NCFAL, environment inference and the masked network (seed 001);
- ``spa``: long-tailed learning with classifier/feature space alignment (seed 003);
- ``design``: NC by design, NormFace, NTCE, NONL, fixed ETF with dot regression, SupCon (seed 004).

A method's own data sets go to ``nclab.data``, its tables to ``nclab.tables``.
"""

from ..train.contract import ERM, EpochMeans, Hook, Method, standard_model, standard_training
from . import control, design, invariance, ncfal, spa

__all__ = [
    "Method",
    "Hook",
    "EpochMeans",
    "ERM",
    "standard_model",
    "standard_training",
    "control",
    "design",
    "invariance",
    "ncfal",
    "spa",
]
