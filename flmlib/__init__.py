"""flmlib: the package behind the flm-study landmark notebooks."""
