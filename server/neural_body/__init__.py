"""Neural Body: structured latent codes on body vertices, a sparse-conv network and volume rendering."""
