"""Fixtures of the fault-injection suite: a real Mosquitto broker per test."""

from tests.support.mosquitto import mosquitto, mosquitto_factory

__all__ = ["mosquitto", "mosquitto_factory"]
