"""Metrics: point-cloud (toy), feature-based (FD/KID), and real-model metrics."""
