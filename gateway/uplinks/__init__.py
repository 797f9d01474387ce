"""Uplinks: consumers of the reading log that deliver readings to a remote peer."""

from gateway.uplinks.mqtt import MqttUplink

__all__ = ["MqttUplink"]
