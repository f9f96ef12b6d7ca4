"""lolnerf: learn a 3D generative model of an object class from single-view photos (LOLNeRF)."""

__version__ = "0.1.0"
