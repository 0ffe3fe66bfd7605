"""Adapters for pretrained models from other libraries.

- `indis.integrations.diffusers`: diffusers pixel UNets, Stable Diffusion, FLUX and LTX-Video (extra `indis[diffusers]`),
  and `sample_pipeline`, which runs a pipeline's prompt encoding and decoding around indis' own solver loop.
- `indis.integrations.edm`: NVlabs EDM network pickles (`edm:PATH.pkl`, only with `trust_pickle=True`).

Importing a submodule registers its `load_model` prefix (`diffusers:`, `edm:`).
"""
