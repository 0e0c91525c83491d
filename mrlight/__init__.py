"""mrlight: train and sample Mean-Reverting (IR-SDE) diffusion models with the fast MR Sampler."""

__version__ = "0.1.0"
