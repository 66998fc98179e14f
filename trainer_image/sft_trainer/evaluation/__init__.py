"""Evaluation suites: what fine-tuning did to the model, base vs tuned, with confidence intervals.

generation.py  batched greedy decoding (KV cache, left padding, the chat template); loading a model + adapter
ifeval.py      IFEval's verifiable instructions, strict/loose, prompt/instruction level (if-verifiable checkers)
punkt.py       the NLTK Punkt sentence-splitter parameters the IFEval checkers need, shipped, never downloaded
safety.py      refusal on held-out AdvBench and XSTest unsafe, over-refusal on XSTest safe
refusal.py     the refusal judge (string matching)
reference.py   mean per-token NLL of held-out human answers
stats.py       bootstrap intervals over prompts; paired bootstrap for deltas
report.py      eval_report.json / eval_report.html
runner.py      runs the chosen suites on one model, or on base and tuned
"""
