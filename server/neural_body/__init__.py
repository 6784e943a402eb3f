"""Neural Body: structured latent codes on body vertices, a sparse-conv network and volume rendering.

"The original" in these modules is the authors' implementation, github.com/zju3dv/neuralbody (Peng et al., Neural
Body, CVPR 2021); the file names cited (latent_xyzc.py, if_nerf_data_utils.py, ...) are paths in that repository.
"""
