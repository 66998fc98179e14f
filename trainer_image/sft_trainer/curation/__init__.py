"""The data-hygiene pipeline of a `DatasetCuration`.

One filter is one small class with one method (`check`) that returns None to
keep a record or a reason code to drop it; `base.Filter` counts totals and
drops per reason. Whole-set steps (deduplication, token review, balancing)
implement `base.SetStep.select`. `pipeline.build_steps` turns the spec into a
flat list of steps and `pipeline.curate` runs them; `entrypoint` writes the
outputs and the report.
"""
