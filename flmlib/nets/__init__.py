"""The architectures of the model zoo, one family per module (the ``architecture`` of a ``models:`` entry in
params.yaml names the module; its ``architecture_kwargs`` pick the variant, e.g. ``depth: 18``).

Every network derives from :class:`flmlib.nets.base.LandmarkNet`: it takes ``(B, 3, S, S) float32`` RGB pixels
0..255, normalises them itself (grey networks convert inside), and returns ``(B, 2 * n_points) float32`` in box units.
"""
