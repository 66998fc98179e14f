"""Package data: refusal set, safety evaluation prompts, reference text (see README.md)."""
