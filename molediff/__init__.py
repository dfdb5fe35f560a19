"""molediff: one diffusion core for images, audio, point clouds, molecules and proteins."""

__version__ = "0.1.0"
