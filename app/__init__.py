"""Passerelle RSA: data exchange between the CAF/MSA, a Département's orientation platform and France Travail."""

__version__ = "0.1.0"
