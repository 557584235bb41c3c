"""lightseg: a PyTorch Lightning plug-in and experiment CLI for image segmentation."""

__version__ = "0.1.0"
