"""Code that lives outside ``raystudy/``: methods registered by a user's own module."""
