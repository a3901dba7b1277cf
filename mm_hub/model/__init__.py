"""The model as it travels: every module here is copied into each saved or pushed model folder, so that
``AutoModel.from_pretrained(repo, trust_remote_code=True)`` loads it where mm_hub is not installed.

The rule that makes that work: these modules import only third-party packages and each other, by same-folder
relative imports (``from .configuration_mm_hub import MMHubConfig``); never ``mm_hub.<anything>``, nor
``from . import x``. `tests/test_boundary.py` fails when one breaks it. Code that only runs with mm_hub installed
(the app, search, training, the Hub helpers) lives outside this folder.
"""
