"""Switchboard: a Phoenix Channels server for Python."""
