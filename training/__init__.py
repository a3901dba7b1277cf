"""mm_hub training recipes: fine-tune on Hub datasets, evaluate, tune, index and push.

The library (`mm_hub`) never imports this package; it uses only mm_hub's public API. `training.train` is the run;
the modules imported here extend it through its hooks (a hyper-parameter search, training on cached encoder
outputs), so the run never imports them.
"""

from . import encoded, hpo  # noqa: F401  (registers their hooks with training.train)
