"""The version of burden: written here once; pyproject.toml and the reports read it from here."""

__version__ = "0.2.0"
