"""Storage: the schema, migrations and every SQL statement (SQLAlchemy)."""
