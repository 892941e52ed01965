"""Seeded synthetic image generators for stations whose real images cannot ship with the code."""
