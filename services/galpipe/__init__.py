"""galpipe: position angles of millions of galaxies from Radon transforms of survey cutouts."""

__version__ = "0.1.0"
