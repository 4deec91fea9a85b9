"""Store: the results database (SQLite or an SQLAlchemy URL) behind ``edgeq history``."""
