"""TEST-ONLY restatements of the published networks' forward passes, the independent side of the parity tests.

Written from reading the published code (Algolzw/image-restoration-sde `DenoisingUNet_arch.py`,
`DenoisingNAFNet_arch.py`, `module_util.py`; Algolzw/daclip-uir `daclip-sde/models/modules/*`), keeping
its module structure, names and operation order (einops rearranges, separate mean/var, Sequential
containers passing (x, t) pairs), so that a state dict saved from these classes is laid out as the
official `save_network` writes it. They do not import mrlight. Never used outside tests.
"""
