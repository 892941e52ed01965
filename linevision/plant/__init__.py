"""The plant view: every line's state, yield and alarms from the plant's MQTT broker."""
