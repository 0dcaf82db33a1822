"""Tiny offline models, generated media and demo data, used by the tests and the demo."""
