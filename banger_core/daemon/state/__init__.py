"""Durable state: SQLite through sqlmodel, with schema migrations."""
