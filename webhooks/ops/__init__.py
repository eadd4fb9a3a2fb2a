"""Operating the service: status, dead letters, and the other operator commands."""
