"""What operators read: Prometheus metrics and the event loop's lag."""
