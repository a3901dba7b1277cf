"""Where extensions hook into the run, so that the run (`training.train`) never imports them.

`training/__init__.py` imports the extensions (`hpo`: a hyper-parameter search first; `encoded`: training on cached
encoder outputs), which append to these lists; `training.train.run_training` calls them. Kept apart from
`training.train` so that importing the package does not import the run (``python -m training.train`` runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Each takes the recipe (`training.train.Recipe`) and returns the one to train (the search returns the best).
RECIPE_HOOKS: list[Callable[[Any], Any]] = []
# Each adjusts the final trainer (`training.train.MMHubTrainer`) of a recipe before it trains.
TRAINER_HOOKS: list[Callable[[Any, Any], None]] = []
