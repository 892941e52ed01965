"""Stations: frames of one cell -> one Decision."""
