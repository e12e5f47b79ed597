"""Fixtures for the daemon's tests: a real Mosquitto broker."""

from tests.support.mosquitto import mosquitto, mosquitto_factory

__all__ = ["mosquitto", "mosquitto_factory"]
