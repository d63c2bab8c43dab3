"""Hydra config root of esper-simic, shipped inside the package as ``esper.simic.conf``."""
