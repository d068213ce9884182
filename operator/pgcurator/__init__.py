"""pgcurator: keeps the inside of PostgreSQL databases in their declared shape."""

__version__ = "0.1.0"
