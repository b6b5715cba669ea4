"""HTTP routes: health, the backend API, and dev/test-only helpers."""
