"""Body models in SMPL's layout: real SMPL (licensed, user-supplied) and the bundled open demo body."""
