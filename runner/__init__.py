"""arpu: a warehouse-native SQL metrics layer for Segment e-commerce events."""

__version__ = "0.1.0"
