"""eprd: a drop-in, EPR-compatible Elastic Package Registry."""

__version__ = "0.1.0"

# The reference API level eprd implements; reported by "/" as the reference does.
API_VERSION = "1.40.1"
