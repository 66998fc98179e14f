"""The models curation uses to judge meaning: loading, device choice, batching.

- `scorer`: a causal language model that measures each response (perplexity,
  perplexity given the prompt, IFD, end-of-turn probability).
- `device`: where a model runs and in which precision.

Heavy libraries (torch, transformers) are imported inside the functions that
need them, so importing this package costs nothing.
"""
