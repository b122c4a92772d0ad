"""Configuration: settings (environment), the specialists file (spec), errors."""
