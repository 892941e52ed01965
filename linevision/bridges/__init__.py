"""Bridges from the verdict bus to the line: the PLC handshake and the reject actuator."""
