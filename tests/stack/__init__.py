"""The stack declaration and its renderings: compose project, tool configs, Prometheus."""
