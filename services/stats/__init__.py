"""Stats service: usage history, Prometheus metrics, an admin dashboard and exports."""
