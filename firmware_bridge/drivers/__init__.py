"""Drivers for slot hardware that speaks a published vendor protocol instead of slot-bus v1."""
