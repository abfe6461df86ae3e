"""vna: a vendor-neutral archive for medical images, with whole-slide pathology first-class."""

__version__ = "0.1.0"
