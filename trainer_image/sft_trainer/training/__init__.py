"""Fine-tuning: chat templates and loss masks, packing, the LoRA and full recipes, probes, export.

Heavy dependencies (torch, transformers, peft) are imported by the modules
that need them, never here, so `import sft_trainer.training` stays cheap.
"""
