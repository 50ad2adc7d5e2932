"""Built-in methods, registered through the same hook a plugin uses."""
