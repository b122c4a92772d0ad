"""Real, small stand-ins for external services, for tests (not mocks: they speak HTTP)."""
