"""End-to-end tests: the real app in headless Chromium."""
