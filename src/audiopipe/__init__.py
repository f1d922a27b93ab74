"""audiopipe: reproducible pipeline for efficient audio taggers and sound event detectors."""

__version__ = "0.1.0"
