"""mm_hub training recipes: fine-tune on Hub datasets, evaluate, tune, index and push.

The library (`mm_hub`) never imports this package; it uses only mm_hub's public API.
"""
