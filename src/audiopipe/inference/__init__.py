"""Inference on our checkpoints and the published ones: loaders/converters (`checkpoints`), class lists
(`classes`), bounded-memory decoding and windowing (`stream`), argument checks (`options`).

Nothing here is imported by `audiopipe --help`; `options` and `errors` are torch-free.
"""
